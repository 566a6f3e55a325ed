"""Messages for users that a Nuclio proxy image gives too: plain text, with no PyTorch and no
cvat_sdk (a proxy image has neither), so `remote.py` imports them from here; `user_errors`
exports them beside the errors it turns into messages, for everything else.

Each says what happened and what the user (or the server's operator) can do.
"""

from __future__ import annotations


def replica_busy_message(ahead: int, retry_after_s: int, waited: bool) -> str:
    """A server replica's refusal (503, with Retry-After: `retry_after_s`): the `ahead`
    requests queued before this one would not let it end within the server's request timeout;
    `waited` when it was refused at its turn, after waiting, rather than when it arrived."""
    when = "waited too long for its turn" if waited else f"has {ahead} request(s) ahead of it"
    return (
        f"The SAM2 server is busy: this request {when} to be answered within the server's "
        f"request timeout (serve --request-timeout), so it was not computed; ask again in "
        f"{retry_after_s} s."
    )


def server_busy_message(
    url: str, retry_after_s: float, call_timeout_s: float, refusals: int
) -> str:
    """The proxy's answer (503) when the server stays busy: it refused the request `refusals`
    times without computing it, and asking again after its last hint (`retry_after_s`) would
    not be answered within the proxy's whole call (`call_timeout_s`)."""
    return (
        f"The SAM2 server at {url} is busy with other requests: it refused this one "
        f"{refusals} time(s) without computing it, and asking again in {retry_after_s:g} s, as "
        f"it asked, would not be answered within this function's SAM2_SERVER_CALL_TIMEOUT "
        f"({call_timeout_s:g} s). Run the tracker again in a moment; if the server stays busy, "
        "its operator can add replicas (sam2-tracker serve --replicas, or --max-replicas to "
        "autoscale)."
    )
