"""The functions' parameters from environment variables (Nuclio's `spec.env`, the server's shell).

Each `SAM2_<NAME>` variable is the `-p <name>=...` parameter of the agent functions: the value is
parsed into the parameter's type here and then checked by the same `TrackerOptions` /
`ModelOptions` code as the agents', so the meanings, checks and messages are the same.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import redis

from tracker.cvat.options import ModelOptions, TrackerOptions
from tracker.engine import model_loading

_MODEL_VARIABLES: dict[str, type] = {
    "model_id": str,
    "config": str,
    "device": str,
    "dtype": str,
    "image_size": int,
}
_TRACKER_VARIABLES: dict[str, type] = {
    **_MODEL_VARIABLES,
    "max_state_memory_mb": int,
    "polygon_tolerance": float,
}
#: The interactor's cache of image embeddings, keyed by the frame's bytes.
DEFAULT_MAX_EMBEDDING_MEMORY_MB = 1024
INTERACTOR_ANSWERS = ("shapes", "mask")


def variable(name: str) -> str:
    return f"SAM2_{name.upper()}"


def _parsed(environ: Mapping[str, str], name: str, kind: type) -> Any:
    text = environ[variable(name)].strip()
    try:
        return kind(text)
    except ValueError as e:
        what = {int: "a whole number", float: "a number"}[kind]
        raise model_loading.ModelConfigError(
            f"{variable(name)} must be {what}; got {text!r}."
        ) from e


def _params(environ: Mapping[str, str], names: Mapping[str, type]) -> dict[str, Any]:
    return {
        name: _parsed(environ, name, kind)
        for name, kind in names.items()
        if environ.get(variable(name), "").strip()
    }


def tracker_options(environ: Mapping[str, str]) -> TrackerOptions:
    return TrackerOptions.from_params(_params(environ, _TRACKER_VARIABLES))


@dataclasses.dataclass(frozen=True)
class InteractorSettings:
    model: ModelOptions
    max_embedding_memory_mb: int
    answer: str  # "shapes" (CVAT's current interactor answer) or "mask" (older UIs)


def interactor_settings(environ: Mapping[str, str]) -> InteractorSettings:
    model = ModelOptions.from_params(
        _params(environ, _MODEL_VARIABLES), model_loading.IMAGE_BUILDER
    )
    cache_mb = _params(environ, {"max_embedding_memory_mb": int}).get(
        "max_embedding_memory_mb", DEFAULT_MAX_EMBEDDING_MEMORY_MB
    )
    if cache_mb < 0:
        raise model_loading.ModelConfigError(
            f"{variable('max_embedding_memory_mb')} must be 0 (no cache) or more megabytes."
        )
    answer = environ.get(variable("interactor_answer"), "shapes").strip() or "shapes"
    if answer not in INTERACTOR_ANSWERS:
        raise model_loading.ModelConfigError(
            f"{variable('interactor_answer')} must be one of {', '.join(INTERACTOR_ANSWERS)}; "
            f"got {answer!r}."
        )
    return InteractorSettings(model, cache_mb, answer)


_TIMEOUTS = {"socket_connect_timeout": 5, "socket_timeout": 10, "health_check_interval": 30}


def redis_client(environ: Mapping[str, str]) -> tuple[redis.Redis, str] | None:
    """A client for the Redis the environment names, and where it is (no password); None if none.

    `SAM2_REDIS_URL` (`redis://:password@host:port/db`, the server's `--redis-url`) comes first;
    then `CVAT_FUNCTIONS_REDIS_*`, the names CVAT documents for its Nuclio SAM2 tracker and its
    deploy scripts pass; then `CVAT_REDIS_*`, the CVAT server's own.
    """
    url = environ.get(variable("redis_url"))
    if url:
        try:
            client = redis.Redis.from_url(url, **_TIMEOUTS)
        except ValueError as e:
            raise model_loading.ModelConfigError(
                f"{variable('redis_url')} is not a Redis URL ({e}); use redis://:PASSWORD@HOST:PORT/0."
            ) from e
        kwargs = client.connection_pool.connection_kwargs
        return client, f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
    host = environ.get("CVAT_FUNCTIONS_REDIS_HOST") or environ.get("CVAT_REDIS_HOST")
    if not host:
        return None
    port_text = environ.get("CVAT_FUNCTIONS_REDIS_PORT") or environ.get("CVAT_REDIS_PORT")
    try:
        port = int(port_text or 6379)
    except ValueError as e:
        raise model_loading.ModelConfigError(
            f"CVAT_FUNCTIONS_REDIS_PORT must be a port number; got {port_text!r}."
        ) from e
    password = environ.get("CVAT_FUNCTIONS_REDIS_PASSWORD") or environ.get("CVAT_REDIS_PASSWORD")
    client = redis.Redis(host=host, port=port, password=password or None, **_TIMEOUTS)
    return client, f"{host}:{port}"
