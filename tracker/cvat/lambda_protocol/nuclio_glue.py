"""What the Nuclio entry points (`serverless/*/nuclio/main.py`) share: service set-up and answers.

Nuclio calls `init_context` once per worker process and `handler` per request. The service
(`lambda_api.LambdaTracker`, `lambda_interactor.LambdaInteractor`, or a proxy to a remote
server) answers `(status, JSON object)` and never raises, so neither does the handler.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol


class Service(Protocol):
    def handle(self, body: object) -> tuple[int, dict[str, Any]]: ...


def init(context: Any, build: Callable[[Mapping[str, str]], Service]) -> None:
    """Build the service from the function's environment (`spec.env`); a wrong setting fails
    here, in the function's log, so that `nuctl deploy` reports it."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        context.user_data.service = build(os.environ)
    except Exception as e:
        context.logger.error(f"The SAM2 function cannot start: {e}")
        raise


def tracker_service(environ: Mapping[str, str]) -> Service:
    """The tracker: a proxy to the remote server when `SAM2_SERVER_URL` is set (no model, no
    PyTorch imported), else SAM2 in this process."""
    if environ.get("SAM2_SERVER_URL"):
        from tracker.cvat.lambda_protocol.remote import RemoteService

        return RemoteService.from_env(environ, "tracker")
    with _model_installed():
        from tracker.cvat.lambda_protocol.services import tracker_from_env

    return tracker_from_env(environ)


def interactor_service(environ: Mapping[str, str]) -> Service:
    """The interactor, likewise."""
    if environ.get("SAM2_SERVER_URL"):
        from tracker.cvat.lambda_protocol.remote import RemoteService

        return RemoteService.from_env(environ, "interactor")
    with _model_installed():
        from tracker.cvat.lambda_protocol.services import interactor_from_env

    return interactor_from_env(environ)


@contextlib.contextmanager
def _model_installed() -> Iterator[None]:
    """A proxy image (`VARIANT=proxy`) has no PyTorch, sam2 or redis: without SAM2_SERVER_URL
    it would die on "No module named ...", which does not say what to do."""
    try:
        yield
    except ModuleNotFoundError as e:
        raise RuntimeError(
            f"This image has no SAM2 model installed (No module named {e.name!r}): it is a "
            "proxy image (cvat-sam2-tracker:proxy) and needs SAM2_SERVER_URL (and "
            "SAM2_SERVER_TOKEN) set to a SAM2 server; or build the cpu or cuda variant."
        ) from e


def handle(context: Any, event: Any) -> Any:
    status, body = context.user_data.service.handle(event.body)
    return context.Response(
        body=json.dumps(body), headers={}, content_type="application/json", status_code=status
    )
