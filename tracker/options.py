"""The function's `-p` parameters: checked when the function is created, applied when it loads.

Checking reads no weights, so `cvat-cli function create-native` works on any machine; the model is
built by `TrackerOptions.load_model` when the first frame arrives.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from sam2.sam2_video_predictor import SAM2VideoPredictor

from tracker import model_loading

DEFAULT_MODEL_ID = "facebook/sam2.1-hiera-tiny"
DEFAULT_MAX_STATE_MEMORY_MB = 2048


def _typed(params: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    value = params.pop(name, default)
    if value is default:
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        example = {str: "str:VALUE", int: "int:256", float: "float:1.5"}[kind]
        raise ValueError(
            f"Parameter {name} must be a {kind.__name__}: pass it as -p {name}={example}."
        )
    return value


@dataclasses.dataclass(frozen=True)
class TrackerOptions:
    reference: model_loading.ModelReference
    device: torch.device
    dtype: torch.dtype
    image_size: int | None
    polygon_tolerance: float
    max_state_memory_mb: int
    builder_options: dict[str, Any]

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> TrackerOptions:
        """Check every parameter; raises ValueError with a message for the user."""
        params = dict(params)
        model_id = _typed(params, "model_id", str, DEFAULT_MODEL_ID)
        config = _typed(params, "config", str, None)
        device = model_loading.resolve_device(_typed(params, "device", str, "auto"))
        dtype = model_loading.resolve_dtype(_typed(params, "dtype", str, "auto"), device)
        image_size = model_loading.check_image_size(_typed(params, "image_size", int, None))
        tolerance = _typed(params, "polygon_tolerance", float, 1.0)
        if tolerance < 0:
            raise ValueError("polygon_tolerance must be 0 (no simplification) or more pixels.")
        budget = _typed(params, "max_state_memory_mb", int, DEFAULT_MAX_STATE_MEMORY_MB)
        if budget <= 0:
            raise ValueError("max_state_memory_mb must be a positive number of megabytes.")
        return cls(
            reference=model_loading.resolve_model(model_id, config),
            device=device,
            dtype=dtype,
            image_size=image_size,
            polygon_tolerance=tolerance,
            max_state_memory_mb=budget,
            builder_options=model_loading.check_builder_options(params),
        )

    def load_model(self) -> SAM2VideoPredictor:
        return model_loading.build_video_model(
            self.reference, self.device, self.image_size, self.builder_options
        )
