"""A thin client of the remote SAM2 server, for Nuclio functions on a CVAT host without a GPU.

It forwards CVAT's request body as it came, with only the headers the server needs (the bearer
token and the content type; none of CVAT's), with connect and read
timeouts, and turns failures into answers a CVAT user or operator can act on, naming what the
server (or a proxy in between) answered.

Retries never step a tracker twice. A request that was never sent (connection refused, no
connection within the connect timeout) is retried whatever it asks. A request that got no answer
from our server (connection lost after sending, read timeout, a 408/500/502/503/504 that is not
our JSON: Ray Serve's plain text when a replica dies or times out, a reverse proxy's HTML) is
retried too, because asking again is harmless: the interactor keeps no state, and the server
answers a repeated tracker request (same states, same frame) as the first time, without stepping
(`lambda_api`). Answers in our JSON are final, except 502/503/504.

A 503 with Retry-After (a busy server refusing at once what it could not compute in time) was
not computed: it is asked again after the hint, if that try can still end within
SAM2_SERVER_CALL_TIMEOUT, else answered 503 with a message that says the server is busy.

Importing this module loads no PyTorch: a proxy image needs only `requests`.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import requests
import urllib3.exceptions

from tracker.cvat.lambda_protocol import timeouts
from tracker.cvat.lambda_protocol.remote_replies import Answer, Busy, Failure, reply_answer
from tracker.cvat.user_messages import server_busy_message

_log = logging.getLogger(__name__)


class RemoteConfigError(ValueError):
    """A proxy setting that cannot work; the message names the variable."""


class RemoteService:
    """Answers CVAT's lambda requests by asking `base_url`/`endpoint` of the SAM2 server."""

    def __init__(
        self,
        base_url: str,
        endpoint: str,
        token: str | None,
        connect_timeout: float = timeouts.CONNECT_TIMEOUT_S,
        read_timeout: float = timeouts.READ_TIMEOUT_S,
        call_timeout: float = timeouts.CALL_TIMEOUT_S,
        retries: int = 2,
        backoff: float = 0.5,
        ca_bundle: str | None = None,
    ) -> None:
        self.url = f"{base_url.rstrip('/')}/{endpoint}"
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        if connect_timeout + read_timeout >= call_timeout:
            raise RemoteConfigError(
                "SAM2_SERVER_CALL_TIMEOUT (a proxy's whole call, retries included) must be longer "
                "than SAM2_SERVER_CONNECT_TIMEOUT + SAM2_SERVER_READ_TIMEOUT (one try), and "
                "shorter than the function's eventTimeout."
            )
        self._timeouts = (connect_timeout, read_timeout)
        self._call_timeout = call_timeout
        self._retries = retries
        self._backoff = backoff
        self._session = requests.Session()
        self._session.trust_env = False  # no proxies or .netrc from the environment...
        if ca_bundle:  # ...and so no REQUESTS_CA_BUNDLE either: a setting of our own
            if not Path(ca_bundle).is_file():
                raise RemoteConfigError(
                    f"SAM2_SERVER_CA_BUNDLE={ca_bundle} is not a file: give the PEM file of the "
                    "CA that signed the SAM2 server's (or its TLS proxy's) certificate."
                )
            self._session.verify = ca_bundle

    @classmethod
    def from_env(cls, environ: Mapping[str, str], endpoint: str) -> RemoteService:
        def seconds(name: str, default: float) -> float:
            try:
                value = float(environ.get(name, default))
            except ValueError:
                value = -1.0
            if value <= 0:
                raise RemoteConfigError(f"{name} must be a positive number of seconds.")
            return value

        return cls(
            environ["SAM2_SERVER_URL"],
            endpoint,
            environ.get("SAM2_SERVER_TOKEN") or None,
            connect_timeout=seconds("SAM2_SERVER_CONNECT_TIMEOUT", timeouts.CONNECT_TIMEOUT_S),
            read_timeout=seconds("SAM2_SERVER_READ_TIMEOUT", timeouts.READ_TIMEOUT_S),
            call_timeout=seconds("SAM2_SERVER_CALL_TIMEOUT", timeouts.CALL_TIMEOUT_S),
            ca_bundle=environ.get("SAM2_SERVER_CA_BUNDLE") or None,
        )

    def handle(self, body: object) -> Answer:
        """The server's answer, asking again what is safe to ask again while a whole new try
        (connect and read timeouts) still ends within the call timeout, so that the last
        failure's message reaches CVAT before the function's eventTimeout. A busy server's
        hint (503 with Retry-After) is the pause before asking again; when the try after it
        could end too late, the answer is 503 with `server_busy_message`."""
        data = body if isinstance(body, bytes | str) else json.dumps(body)
        failures, refusals, started = 0, 0, time.monotonic()
        while True:
            status, answer, failure = self._ask(data)
            if isinstance(failure, Busy):  # computed nothing: bounded by the call timeout only
                refusals += 1
                pause, spent = max(failure.retry_after_s, self._backoff), False
            else:
                pause = self._backoff * 2**failures
                spent = failure is not Failure.RETRIED or failures >= self._retries
            late = time.monotonic() - started + pause + sum(self._timeouts) > self._call_timeout
            if spent or late:
                if isinstance(failure, Busy):
                    _log.info("%s", answer.get("message"))
                    message = server_busy_message(self.url, pause, self._call_timeout, refusals)
                    answer = {"message": message}
                if status >= 400:
                    _log.warning("Answered %d: %s", status, answer.get("message"))
                return status, answer
            failures += not isinstance(failure, Busy)
            _log.info("Asking %s again in %g s: %s", self.url, pause, answer.get("message"))
            time.sleep(pause)

    def _ask(self, data: bytes | str) -> tuple[int, dict, Failure | Busy]:
        """One try: (status, answer, what kind of failure it was)."""
        try:
            reply = self._session.post(
                self.url, data=data, headers=self._headers, timeout=self._timeouts
            )
        except requests.exceptions.SSLError as e:
            what = "TLS certificate" if _caused_by(e, ssl.SSLCertVerificationError) else "TLS"
            return (
                502,
                self._message(
                    f"failed the {what} check ({e}); if its certificate comes from a private CA, "
                    "set SAM2_SERVER_CA_BUNDLE to that CA's PEM file",
                    check=False,
                ),
                Failure.FINAL,
            )
        except requests.exceptions.ConnectTimeout:
            connect = self._timeouts[0]
            return (
                504,
                self._message(
                    f"did not accept a connection within {connect:g} s "
                    "(SAM2_SERVER_CONNECT_TIMEOUT)"
                ),
                Failure.RETRIED,
            )
        except requests.exceptions.ConnectionError as e:
            if _caused_by(e, ConnectionRefusedError):
                return 502, self._message("refused the connection"), Failure.RETRIED
            if _caused_by(e, urllib3.exceptions.NewConnectionError):
                return 502, self._message(f"is unreachable ({e})"), Failure.RETRIED
            # The connection broke after the request went out: it may have been served.
            return (
                502,
                self._message(f"dropped the connection without answering ({e})"),
                Failure.RETRIED,
            )
        except requests.exceptions.Timeout:
            read = self._timeouts[1]
            waited = (
                f"did not answer within {read:g} s (SAM2_SERVER_READ_TIMEOUT, which must be longer "
                "than the server's serve --request-timeout)"
            )
            return 504, self._message(waited), Failure.RETRIED
        except requests.exceptions.RequestException as e:
            return 502, self._message(f"could not be asked ({e})"), Failure.FINAL
        return reply_answer(self.url, reply)

    def _message(self, what: str, check: bool = True) -> dict[str, str]:
        advice = "; check that it runs and that SAM2_SERVER_URL points to it." if check else "."
        return {"message": f"The SAM2 server at {self.url} {what}{advice}"}


def _caused_by(error: BaseException, kind: type[BaseException]) -> bool:
    return any(isinstance(e, kind) for e in _chain(error))


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error and everything behind it: causes, contexts, and what requests and urllib3 wrap
    (`MaxRetryError.reason`, exceptions passed as arguments)."""
    pending, seen = [error], set()
    while pending:
        e = pending.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        pending += [e.__cause__, e.__context__, getattr(e, "reason", None)]
        pending += [a for a in e.args if isinstance(a, BaseException)]
