"""The functions' `-p` parameters: checked when a function is created, applied when it loads.

Checking reads no weights, so `cvat-cli function create-native` works on any machine; the model is
built by `ModelOptions.load` when the first frame arrives.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
from sam2.modeling.sam2_base import SAM2Base

from tracker.engine import model_loading

_log = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "facebook/sam2.1-hiera-tiny"
DEFAULT_MAX_STATE_MEMORY_MB = 2048


def take(params: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    """Remove `name` from `params` and check its type; cvat-cli's -p gives str, int, float, bool."""
    value = params.pop(name, default)
    if value is default:
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        example = {str: "str:VALUE", int: "int:256", float: "float:1.5"}[kind]
        raise model_loading.ModelConfigError(
            f"Parameter {name} must be a {kind.__name__}: pass it as -p {name}={example}."
        )
    return value


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """Which SAM2 model to load, where, at which precision and size (shared by all functions)."""

    reference: model_loading.ModelReference
    device: torch.device
    dtype: torch.dtype
    image_size: int | None
    builder: model_loading.Builder
    builder_options: dict[str, Any]

    @classmethod
    def from_params(cls, params: dict[str, Any], builder: model_loading.Builder) -> ModelOptions:
        """Check the loading parameters; every other one must be an option of `builder`."""
        params = dict(params)
        model_id = take(params, "model_id", str, DEFAULT_MODEL_ID)
        config = take(params, "config", str, None)
        device = model_loading.resolve_device(take(params, "device", str, "auto"))
        dtype = model_loading.resolve_dtype(take(params, "dtype", str, "auto"), device)
        image_size = model_loading.check_image_size(take(params, "image_size", int, None))
        return cls(
            reference=model_loading.resolve_model(model_id, config),
            device=device,
            dtype=dtype,
            image_size=image_size,
            builder=builder,
            builder_options=model_loading.check_builder_options(params, builder),
        )

    def load(self) -> SAM2Base:
        model = model_loading.build_model(
            self.reference, self.device, self.image_size, self.builder_options, self.builder
        )
        _log.info("Running SAM2 with %s on %s", self.dtype, self.device)
        return model


@dataclasses.dataclass(frozen=True)
class TrackerOptions:
    model: ModelOptions
    polygon_tolerance: float
    max_state_memory_mb: int

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> TrackerOptions:
        """Check every parameter; raises ModelConfigError with a message for the user."""
        params = dict(params)
        tolerance = take(params, "polygon_tolerance", float, 1.0)
        if tolerance < 0:
            raise model_loading.ModelConfigError(
                "polygon_tolerance must be 0 (no simplification) or more pixels."
            )
        budget = take(params, "max_state_memory_mb", int, DEFAULT_MAX_STATE_MEMORY_MB)
        if budget <= 0:
            raise model_loading.ModelConfigError(
                "max_state_memory_mb must be a positive number of megabytes."
            )
        model = ModelOptions.from_params(params, model_loading.VIDEO_BUILDER)
        return cls(model, tolerance, budget)
