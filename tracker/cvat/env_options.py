"""The functions' parameters from environment variables (Nuclio's `spec.env`, the server's shell).

Each `SAM2_<NAME>` variable is the `-p <name>=...` parameter of the agent functions: its text is
parsed into the parameter's type (from the one table in `tracker.cvat.options`) and then checked
by the same `TrackerOptions` / `InteractorOptions` code as the agents', so the meanings, checks
and messages are the same, with parameters named as variables (`Syntax.ENV`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import redis

from tracker.cvat.options import (
    INTERACTOR_LIMITS,
    INTERACTOR_PARAMETERS,
    TRACKER_LIMITS,
    TRACKER_PARAMETERS,
    InteractorOptions,
    ParameterSpec,
    RequestLimits,
    Syntax,
    TrackerOptions,
)
from tracker.engine.errors import ModelConfigError, Parameter

_log = logging.getLogger(__name__)

INTERACTOR_ANSWERS = ("shapes", "mask")


def variable(name: str) -> str:
    return Syntax.ENV.phrase(Parameter(name))


@contextlib.contextmanager
def phrased_for_env() -> Iterator[None]:
    """Messages name the variables users set, not the agents' `-p` parameters."""
    try:
        yield
    except ModelConfigError as e:
        raise ModelConfigError(Syntax.ENV.render(e)) from e


def _parsed(text: str, spec: ParameterSpec) -> Any:
    try:
        return spec.kind(text)
    except ValueError as e:
        what = {int: "a whole number", float: "a number"}[spec.kind]
        raise ModelConfigError(Parameter(spec.name), f" must be {what}; got {text!r}.") from e


def _params(environ: Mapping[str, str], specs: Sequence[ParameterSpec]) -> dict[str, Any]:
    texts = {spec: environ.get(variable(spec.name), "").strip() for spec in specs}
    return {spec.name: _parsed(text, spec) for spec, text in texts.items() if text}


def device(environ: Mapping[str, str]):
    """The device `SAM2_DEVICE` names on this machine (`auto` resolved), for a server choosing
    its replicas' GPUs before any model is built."""
    from tracker.engine import model_loading

    return model_loading.resolve_device(environ.get("SAM2_DEVICE", "auto"))


def tracker_options(environ: Mapping[str, str]) -> TrackerOptions:
    """The tracker's parameters and the limits of one request (these two only for Nuclio and
    the server: the agent functions take no limits)."""
    with phrased_for_env():
        params = _params(environ, (*TRACKER_PARAMETERS, *TRACKER_LIMITS))
        limits = RequestLimits.from_params(params)
        options = TrackerOptions.from_params(params, syntax=Syntax.ENV)
    return dataclasses.replace(options, limits=limits)


@dataclasses.dataclass(frozen=True)
class InteractorSettings:
    options: InteractorOptions
    answer: str  # "shapes" (CVAT's current interactor answer) or "mask" (older UIs)


def interactor_settings(environ: Mapping[str, str]) -> InteractorSettings:
    with phrased_for_env():
        params = _params(environ, (*INTERACTOR_PARAMETERS, *INTERACTOR_LIMITS))
        limits = RequestLimits.from_params(params)
        options = InteractorOptions.from_params(params, syntax=Syntax.ENV)
    options = dataclasses.replace(options, limits=limits)
    answer = environ.get(variable("interactor_answer"), "").strip() or "shapes"
    if answer not in INTERACTOR_ANSWERS:
        raise ModelConfigError(
            f"{variable('interactor_answer')} must be one of {', '.join(INTERACTOR_ANSWERS)}; "
            f"got {answer!r}."
        )
    return InteractorSettings(options, answer)


_TIMEOUTS = {"socket_connect_timeout": 5, "socket_timeout": 10, "health_check_interval": 30}


def redis_client(environ: Mapping[str, str]) -> tuple[redis.Redis, str] | None:
    """A client for the Redis the environment names, and where it is (no password); None if none.

    `SAM2_REDIS_URL` (`redis://:password@host:port/db`, the server's `--redis-url`) comes first;
    then `CVAT_FUNCTIONS_REDIS_*`, the names CVAT's deploy scripts pass its functions (its
    kvrocks, `cvat_redis_ondisk:6666`). `CVAT_REDIS_*` is never read: in CVAT it names the
    in-memory Redis of its job queues, which tracking states (megabytes per object, kept 8 hours)
    could starve; a warning says so when it is set without the others.
    """
    url = environ.get(variable("redis_url"))
    if url:
        try:
            client = redis.Redis.from_url(url, **_TIMEOUTS)
        except ValueError as e:
            raise ModelConfigError(
                f"{variable('redis_url')} is not a Redis URL ({e}); use redis://:PASSWORD@HOST:PORT/0."
            ) from e
        kwargs = client.connection_pool.connection_kwargs
        return client, f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
    host = environ.get("CVAT_FUNCTIONS_REDIS_HOST")
    if not host:
        if environ.get("CVAT_REDIS_HOST"):
            _log.warning(
                "CVAT_REDIS_HOST is set but not used: it names CVAT's job-queue Redis, which "
                "tracking states would crowd. Set CVAT_FUNCTIONS_REDIS_HOST and _PORT (CVAT's "
                "deploy scripts pass cvat_redis_ondisk and 6666) or %s to keep states in Redis; "
                "until then they live in this process.",
                variable("redis_url"),
            )
        return None
    port_text = environ.get("CVAT_FUNCTIONS_REDIS_PORT") or "6379"
    try:
        port = int(port_text)
    except ValueError as e:
        raise ModelConfigError(
            f"CVAT_FUNCTIONS_REDIS_PORT must be a port number; got {port_text!r}."
        ) from e
    password = environ.get("CVAT_FUNCTIONS_REDIS_PASSWORD")
    client = redis.Redis(host=host, port=port, password=password or None, **_TIMEOUTS)
    return client, f"{host}:{port}"
