"""CVAT's lambda protocol: the Nuclio functions, the server's services and the proxies to it."""
