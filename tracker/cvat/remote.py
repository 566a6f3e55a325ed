"""A thin client of the remote SAM2 server, for Nuclio functions on a CVAT host without a GPU.

It forwards CVAT's request body as it came, with only the headers the server needs (the bearer
token and the content type; none of CVAT's), with connect and read timeouts, and turns failures
into answers a CVAT user or operator can act on. Retries never step a tracker twice: interactor
requests are retried with backoff on connection failures and on 502/503/504 (asking again is
harmless), tracker requests only when the connection was refused before anything was sent.

Importing this module loads no PyTorch: a proxy image needs only `requests`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import requests

_log = logging.getLogger(__name__)

Answer = tuple[int, dict[str, Any]]
_RETRIED_STATUSES = {502, 503, 504}


class RemoteService:
    """Answers CVAT's lambda requests by asking `base_url`/`endpoint` of the SAM2 server."""

    def __init__(
        self,
        base_url: str,
        endpoint: str,
        token: str | None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        retries: int = 2,
        backoff: float = 0.5,
    ) -> None:
        self.url = f"{base_url.rstrip('/')}/{endpoint}"
        self.idempotent = endpoint == "interactor"
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._timeouts = (connect_timeout, read_timeout)
        self._retries = retries
        self._backoff = backoff
        self._session = requests.Session()
        self._session.trust_env = False  # no proxies or .netrc from the environment

    @classmethod
    def from_env(cls, environ: Mapping[str, str], endpoint: str) -> RemoteService:
        return cls(
            environ["SAM2_SERVER_URL"],
            endpoint,
            environ.get("SAM2_SERVER_TOKEN") or None,
            connect_timeout=float(environ.get("SAM2_SERVER_CONNECT_TIMEOUT", 5)),
            read_timeout=float(environ.get("SAM2_SERVER_READ_TIMEOUT", 60)),
        )

    def handle(self, body: object) -> Answer:
        data = body if isinstance(body, bytes | str) else json.dumps(body)
        attempt = 0
        while True:
            status, answer, retriable = self._ask(data)
            if not retriable or attempt >= self._retries:
                if status >= 400:
                    _log.warning("Answered %d: %s", status, answer.get("message"))
                return status, answer
            attempt += 1
            time.sleep(self._backoff * 2 ** (attempt - 1))

    def _ask(self, data: bytes | str) -> tuple[int, dict[str, Any], bool]:
        """One try: (status, answer, whether another try is safe and may help)."""
        try:
            reply = self._session.post(
                self.url, data=data, headers=self._headers, timeout=self._timeouts
            )
        except requests.exceptions.ConnectTimeout:
            return (
                504,
                self._message(f"did not accept a connection within {self._timeouts[0]} s"),
                True,
            )
        except requests.exceptions.ConnectionError as e:
            # Refused or unreachable: the server cannot have seen the request, unless the
            # connection broke after sending it, which only the interactor may repeat.
            refused = isinstance(e.__context__, ConnectionRefusedError) or "refused" in str(e)
            return 502, self._message(f"is unreachable ({e})"), refused or self.idempotent
        except requests.exceptions.Timeout:
            return 504, self._message(f"did not answer within {self._timeouts[1]} s"), False
        except requests.exceptions.RequestException as e:
            return 502, self._message(f"could not be asked ({e})"), False
        if reply.status_code == 401:
            return (
                502,
                {
                    "message": f"The SAM2 server at {self.url} refused this function's token; set "
                    "SAM2_SERVER_TOKEN to the server's token (see the README on rotating it)."
                },
                False,
            )
        try:
            answer = reply.json()
            if not isinstance(answer, dict):
                raise ValueError("not a JSON object")
        except ValueError:
            return 502, self._message(f"answered {reply.status_code} without JSON"), False
        retriable = self.idempotent and reply.status_code in _RETRIED_STATUSES
        return reply.status_code, answer, retriable

    def _message(self, what: str) -> dict[str, str]:
        return {"message": f"The SAM2 server at {self.url} {what}; check that it runs and that "
                "SAM2_SERVER_URL points to it."}  # fmt: skip
