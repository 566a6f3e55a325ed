"""When to load the model: at once in cvat-cli's agent worker, never while registering.

cvat-cli calls a function file's `create` in two places. `function create-native` calls it in its
main process to read the function's spec: that must work without weights, GPU or local files.
`function run-agent` calls it in the initializer of its worker process (a `spawn`ed
`ProcessPoolExecutor` child, `cvat_cli._internal.agent._worker_init`), before any request: loading
the model there makes a wrong model id, file or device fail the agent at start, in its log, instead
of failing (and being retried on) every user's first request.

A spawned child process with cvat-cli's agent module loaded is that worker; the main process of
either command, tests and other hosts calling `create` directly load lazily.
"""

from __future__ import annotations

import multiprocessing
import sys

_AGENT_MODULE = "cvat_cli._internal.agent"


def in_agent_worker() -> bool:
    return multiprocessing.parent_process() is not None and _AGENT_MODULE in sys.modules
