"""The parameter table's entries, their type check, and the limits of one lambda request.

Apart from `tracker.cvat.options` to keep each module small; `options` re-exports what its users
import. Imports nothing heavy, like `options`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tracker.engine.errors import ModelConfigError, Parameter

#: Limits of one request to the Nuclio functions and the server (`RequestLimits`).
DEFAULT_MAX_OBJECTS = 100
DEFAULT_MAX_POLYGON_POINTS = 10_000
DEFAULT_MAX_CLICKS = 100
#: 10,000 x 10,000: aerial frames fit; PIL refuses past 179 megapixels as a decompression bomb.
DEFAULT_MAX_FRAME_MEGAPIXELS = 100


@dataclasses.dataclass(frozen=True)
class ParameterSpec:
    """One parameter of the table: what `--help`, the README and the checks agree on."""

    name: str
    kind: type
    default: Any
    help: str
    choices: tuple[str, ...] | None = None


_FRAME_LIMIT = ParameterSpec(
    "max_frame_megapixels",
    int,
    DEFAULT_MAX_FRAME_MEGAPIXELS,
    "the largest frame a request may send, in millions of pixels, read from the image's header "
    "before it is decoded",
)
#: Limits of one request, for the Nuclio functions and the server only (an agent gets one shape
#: or one prompt per call, and its frames from cvat-cli): `SAM2_MAX_OBJECTS`, `serve --max-objects`.
TRACKER_LIMITS = (
    ParameterSpec(
        "max_objects", int, DEFAULT_MAX_OBJECTS, "the most objects one tracker request may carry"
    ),
    ParameterSpec(
        "max_polygon_points",
        int,
        DEFAULT_MAX_POLYGON_POINTS,
        "the most points one polygon of a tracker request may have",
    ),
    _FRAME_LIMIT,
)
INTERACTOR_LIMITS = (
    ParameterSpec(
        "max_clicks",
        int,
        DEFAULT_MAX_CLICKS,
        "the most clicks (positive and negative together) one interactor request may carry",
    ),
    _FRAME_LIMIT,
)
_EXAMPLES: dict[type, Any] = {str: "VALUE", int: 256, float: 1.5, bool: True}


def _of_kind(value: Any, kind: type) -> bool:
    """`value` is a `kind` as cvat-cli's -p types it (a bool is no int)."""
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def take(params: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    """Remove `name` from `params` and check its type; cvat-cli's -p gives str, int, float, bool."""
    value = params.pop(name, default)
    if value is default:
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not _of_kind(value, kind):
        example = default if _of_kind(default, kind) else _EXAMPLES[kind]
        raise ModelConfigError(
            "Parameter ",
            Parameter(name),
            f" must be of type {kind.__name__}: pass it as, for example, ",
            Parameter(name, example),
            ".",
        )
    return value


def within(name: str, value: int, low: int, high: int) -> int:
    """`value` if it lies in `low`..`high`; else ModelConfigError naming parameter `name`."""
    if not low <= value <= high:
        raise ModelConfigError(
            Parameter(name), f" must be a whole number from {low} to {high}; got {value}."
        )
    return value


@dataclasses.dataclass(frozen=True)
class RequestLimits:
    """Bounds on one request of CVAT's lambda protocol, checked before any model work: one
    request of 100,000 boxes would otherwise run 100,000 starts under the model lock and fill
    the state store, and one huge frame grow the process by gigabytes."""

    max_objects: int = DEFAULT_MAX_OBJECTS
    max_polygon_points: int = DEFAULT_MAX_POLYGON_POINTS
    max_clicks: int = DEFAULT_MAX_CLICKS
    max_frame_megapixels: int = DEFAULT_MAX_FRAME_MEGAPIXELS

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> RequestLimits:
        """The limits among `params` (removed from it); the others keep their defaults."""
        values = {}
        for spec in {*TRACKER_LIMITS, *INTERACTOR_LIMITS}:
            if spec.name in params:
                value = take(params, spec.name, spec.kind, spec.default)
                if value < 1:
                    raise ModelConfigError(
                        Parameter(spec.name), " must be a whole number of at least 1."
                    )
                values[spec.name] = value
        return cls(**values)
