"""How the proxy (`remote.py` beside this) reads an HTTP reply: our server's JSON, or someone
else's error page (Ray Serve's plain text, a reverse proxy's HTML), named in the message with
its status and a short excerpt so that an operator sees who answered what.

Importing this module loads no PyTorch: a proxy image needs only `requests`.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from typing import Any

import requests

Answer = tuple[int, dict[str, Any]]
_EXCERPT_CHARS = 160
# Statuses that say the request was not (or may not have been) served, from Ray Serve (408
# request timeout, 500 when a replica dies, 503 when no replica can take it) or a proxy.
_NOT_SERVED = {408, 500, 502, 503, 504}
_OUR_RETRIED = {502, 503, 504}  # our own JSON answers that are asked again
_TIMED_OUT = (
    ": it timed out (the server's serve --request-timeout, or a timeout of a proxy in front of it"
    ", which must be longer)"
)


class Failure(enum.Enum):
    FINAL = "final"  # an answer (or an error asking again cannot mend)
    # Never sent, or sent and not answered by our server: asked again, whatever it asks, as the
    # server answers a repeated request as the first time.
    RETRIED = "retried"


@dataclasses.dataclass(frozen=True)
class Busy:
    """A 503 with Retry-After: nothing was computed, and the server (or a proxy in front of it)
    asks to be asked again after `retry_after_s` seconds."""

    retry_after_s: float


def reply_answer(url: str, reply: requests.Response) -> tuple[int, dict, Failure | Busy]:
    """(status, answer, failure) for a reply that came back; a 503 whose Retry-After gives
    seconds is `Busy`, whoever sent it."""
    status = reply.status_code
    answer = _json_object(reply)
    hint = retry_after_s(reply.headers.get("Retry-After"))
    if status == 503 and hint is not None:
        said = answer.get("message") if answer else excerpt(reply.text)
        return 503, {"message": f"The SAM2 server at {url} is busy: {said}"}, Busy(hint)
    if status == 401 and answer is not None:
        message = (
            f"The SAM2 server at {url} refused this function's token; set SAM2_SERVER_TOKEN "
            "to the server's token (see the README on rotating it)."
        )
        return 502, {"message": message}, Failure.FINAL
    if answer is not None and (status < 400 or "message" in answer):
        retried = status in _OUR_RETRIED
        return status, answer, Failure.RETRIED if retried else Failure.FINAL
    said = f"HTTP {status} {reply.reason or ''}".strip() + f": {excerpt(reply.text)!r}"
    if status == 413:
        message = (
            f"A proxy between this function and the SAM2 server at {url} refused the request "
            f"body as too large ({said}); raise its body limit above the frames' size (nginx: "
            "client_max_body_size 64m; see the README's TLS advice)."
        )
        return 413, {"message": message}, Failure.FINAL
    if status in _NOT_SERVED:
        message = (
            f"The SAM2 server at {url} (or a proxy in front of it) did not serve the request "
            f"({said}){_TIMED_OUT if status in (408, 504) else ''}; check the server's log, and "
            "that SAM2_SERVER_URL points to it."
        )
        gateway = 504 if status in (408, 504) else 502
        return gateway, {"message": message}, Failure.RETRIED
    message = (
        f"The SAM2 server at {url} answered with something else than the SAM2 server's JSON "
        f"({said}); check that SAM2_SERVER_URL points to the SAM2 server."
    )
    return 502, {"message": message}, Failure.FINAL


def retry_after_s(value: str | None) -> float | None:
    """Retry-After's delay in seconds; None when absent or an HTTP date (which needs clocks
    that agree: not assumed)."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds < float("inf") else None


def excerpt(text: str) -> str:
    """The start of a body, tags and runs of spaces removed (an HTML page's title and heading)."""
    plain = re.sub(r"\s+", " ", re.sub(r"<[^>]*>", " ", text)).strip()
    return plain if len(plain) <= _EXCERPT_CHARS else plain[: _EXCERPT_CHARS - 3] + "..."


def _json_object(reply: requests.Response) -> dict[str, Any] | None:
    try:
        answer = reply.json()
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None
