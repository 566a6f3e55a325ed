"""The chain of timeouts between CVAT and a tracker step, innermost first, each shorter than the
one outside it, so that the innermost gives up first and its answer (naming its setting) reaches
CVAT before CVAT gives up itself:

    a replica's admission budget  <  server request (serve --request-timeout)
    <  one proxy try (connect + read)
    <  the proxy's whole call (retries included)  <  Nuclio's eventTimeout  <  CVAT's wait

CVAT 2.73 waits `CVAT_NUCLIO_DEFAULT_TIMEOUT` seconds (120 by default; cvat/settings/base.py
`NUCLIO["DEFAULT_TIMEOUT"]`) for a function, both as the `requests` timeout and as the dashboard's
`X-Nuclio-Invoke-Timeout` (cvat/apps/lambda_manager/views.py), then answers the browser 504 itself
and any later answer is lost. A deployment that needs longer raises CVAT's setting first, then
the others below it (`chain_problems` names what no longer fits).

Importing this module loads no PyTorch: a proxy image needs only `requests`.
"""

from __future__ import annotations

import dataclasses

CVAT_TIMEOUT_S = 120.0  # CVAT_NUCLIO_DEFAULT_TIMEOUT's default in CVAT 2.73
EVENT_TIMEOUT_S = 110.0  # every function*.yaml's eventTimeout
CONNECT_TIMEOUT_S = 5.0  # SAM2_SERVER_CONNECT_TIMEOUT
READ_TIMEOUT_S = 50.0  # SAM2_SERVER_READ_TIMEOUT
CALL_TIMEOUT_S = 105.0  # SAM2_SERVER_CALL_TIMEOUT: a proxy's whole call, retries included
SERVER_REQUEST_TIMEOUT_S = 45.0  # serve --request-timeout
MARGIN_S = 5.0  # between each timeout and the next one out
ANSWER_MARGIN_S = 2.0  # a replica's admission deadline ends this long before its request timeout


@dataclasses.dataclass(frozen=True)
class Chain:
    """One deployment's timeouts, in seconds."""

    server_request: float = SERVER_REQUEST_TIMEOUT_S
    connect: float = CONNECT_TIMEOUT_S
    read: float = READ_TIMEOUT_S
    call: float = CALL_TIMEOUT_S
    event: float = EVENT_TIMEOUT_S
    cvat: float = CVAT_TIMEOUT_S

    def problems(self) -> list[str]:
        """What does not fit inside what, in the settings' names; empty when the chain holds."""
        links = [
            (self.server_request, "serve --request-timeout", self.read, "SAM2_SERVER_READ_TIMEOUT"),
            (self.connect + self.read, "SAM2_SERVER_CONNECT_TIMEOUT + SAM2_SERVER_READ_TIMEOUT",
             self.call, "SAM2_SERVER_CALL_TIMEOUT"),
            (self.call, "SAM2_SERVER_CALL_TIMEOUT", self.event, "the function's eventTimeout"),
            (self.event, "the function's eventTimeout", self.cvat, "CVAT_NUCLIO_DEFAULT_TIMEOUT"),
        ]  # fmt: skip
        return [
            f"{inner} ({a:g} s) must be shorter than {outer} ({b:g} s)"
            for a, inner, b, outer in links
            if a >= b
        ]


def admission_budget(request_timeout_s: float) -> float:
    """The seconds a replica gives a request from its arrival to the end of its computation:
    the server's request timeout less `ANSWER_MARGIN_S` for the answer to get out (at most half
    of a short timeout), so that a request admitted on time is answered before Ray Serve gives
    up on it (408) and before every timeout outside it."""
    return request_timeout_s - min(ANSWER_MARGIN_S, request_timeout_s / 2)


def for_server_request(request_timeout_s: float) -> Chain:
    """The chain that fits a server whose `--request-timeout` is `request_timeout_s`: the
    defaults where they still fit, else each link `MARGIN_S` longer than the one inside it."""
    default = Chain()
    if request_timeout_s <= default.server_request:
        return dataclasses.replace(default, server_request=request_timeout_s)
    read = request_timeout_s + MARGIN_S
    call = 2 * read + CONNECT_TIMEOUT_S  # a retry after the server's own timeout fits
    event = call + MARGIN_S
    return Chain(
        request_timeout_s, CONNECT_TIMEOUT_S, read, call, event, max(default.cvat, event + MARGIN_S)
    )
