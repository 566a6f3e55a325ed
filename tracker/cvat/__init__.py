"""CVAT adapters: shapes <-> masks, parameters, user-facing errors, state budgets and stores.

Everything here is shared by the entry points (agent function files, Nuclio handlers, the server
app, the CLI); each of them only translates its protocol's envelope. Below lies `tracker.engine`.
"""
