"""How an object's fields are written in Redis (`redis_store.py`), and how Redis failures are
told: nothing pickled, only safetensors tensors and zlib-compressed JSON shapes."""

from __future__ import annotations

import contextlib
import json
import zlib
from collections.abc import Iterator, Sequence

import redis
import safetensors.torch
import torch

from tracker.cvat.shape_tracker import Shape
from tracker.cvat.stores.state_store import Stored, StoreUnavailableError
from tracker.engine.streaming import ObjectState

FORMAT = 2  # of the header; a header of another format is refused as unknown


def header_json(model_key: str, stored: Stored, fields: Sequence[str], heads: Sequence[str]) -> str:
    """An object's `header` field: what `Stored` holds, its tensor fields and lineage heads."""
    return json.dumps(
        {
            "format": FORMAT,
            "model": model_key,
            "type": stored.shape_type,
            "width": stored.width,
            "height": stored.height,
            "bare": stored.bare_points,
            "version": stored.version,
            "digest": stored.digest,
            "outside": stored.outside,
            "prompt": [stored.prompt_frame, stored.walk, stored.offset],
            "fields": sorted(fields),
            "heads": list(heads),
        },
        separators=(",", ":"),
    )


def tensor_fields(state: ObjectState) -> dict[str, torch.Tensor]:
    """The state's tensors by field name; a name always holds the same tensor."""
    fields = {}
    named = [(f"c{e.frame_idx or ''}", e) for e in state.conditioning]  # "c": the first prompt
    for name, entry in named + [(str(e.frame_idx), e) for e in state.recent]:
        if entry.maskmem_features is not None:
            fields[f"mem:{name}"] = entry.maskmem_features
        fields[f"ptr:{name}"] = entry.obj_ptr
    return fields


def encoded(tensor: torch.Tensor) -> bytes:
    return safetensors.torch.save({"t": tensor.detach().contiguous().cpu()})


def decoded(data: bytes, device: torch.device) -> torch.Tensor:
    return safetensors.torch.load(data)["t"].to(device)


def shape_json(shape: Shape | None) -> bytes:
    """The shape as zlib-compressed JSON: a mask's RLE is written with every step, and its runs
    compress well."""
    value = None if shape is None else {"type": shape.type, "points": shape.points}
    return zlib.compress(json.dumps(value, separators=(",", ":")).encode(), level=1)


def shape_of(raw: bytes | None) -> Shape | None:
    value = None if raw is None else json.loads(zlib.decompress(raw))
    return None if value is None else Shape(value["type"], value["points"])


def connection_lost(error: redis.WatchError) -> bool:
    """Whether a WatchError says the watching connection was lost, not that a watched key
    changed: redis-py raises the same class for both, the first while handling the connection's
    error (its context), the second from EXEC's empty reply."""
    lost = (redis.ConnectionError, redis.TimeoutError, OSError)
    return isinstance(error.__context__, lost) or "occurred while watching" in str(error)


@contextlib.contextmanager
def reported(where: str) -> Iterator[None]:
    """Turns Redis failures into StoreUnavailableError naming the server, never a crash
    (WatchError passes: the transaction tells a conflict from a lost connection)."""
    try:
        yield
    except redis.WatchError:
        raise
    except redis.AuthenticationError as e:
        raise StoreUnavailableError(
            f"Redis at {where} refused to authenticate us ({e}); check "
            "CVAT_FUNCTIONS_REDIS_PASSWORD."
        ) from e
    except redis.RedisError as e:
        raise StoreUnavailableError(
            f"The tracking-state store, Redis at {where}, cannot be used ({e}); check that it "
            "runs and that CVAT_FUNCTIONS_REDIS_HOST and CVAT_FUNCTIONS_REDIS_PORT point to it."
        ) from e
