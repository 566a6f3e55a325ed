"""The remote SAM2 server: an entry point on Ray Serve, on top of `tracker.cvat`'s services."""
