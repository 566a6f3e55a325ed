"""CVAT adapters: shapes <-> masks, parameters, user-facing errors, state budgets and stores.

Everything here is shared by the entry points (agent function files, Nuclio handlers, the server
app, the CLI); each of them only translates its protocol's envelope. Below lies `tracker.engine`.
The modules at this level serve every protocol (shapes, the tracker of CVAT shapes, options,
errors, budgets); each subpackage serves one room:

- `agent`: the auto-annotation functions that cvat-cli's agent runs;
- `lambda_protocol`: CVAT's lambda (Nuclio) protocol, for the Nuclio functions, the server and
  the proxies in front of it;
- `stores`: where the lambda protocol's tracking states live between requests.
"""
