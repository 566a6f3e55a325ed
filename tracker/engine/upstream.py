"""The one door to sam2 1.1.0: every upstream name the tracker uses goes through this module.

Contract: no other module of `tracker/` imports `sam2` or touches one of upstream's private
names (`tests/test_upstream_door.py` checks the source). A sam2 upgrade that renames or drops
one of them is found by `missing()`, which `model_loading` calls before building a model, so it
fails loudly with the names instead of a bare `AttributeError` in the middle of a request (or,
for the image predictor's attributes, silently setting an attribute upstream no longer reads).

What the engine relies on, besides upstream's public API (`build_sam2`, `track_step`,
`forward_image`, `SAM2ImagePredictor.set_image`/`predict`):
- `SAM2Base._prepare_backbone_features` and `_encode_new_memory`, as `SAM2VideoPredictor`
  calls them (`_get_image_feature`, `_run_memory_encoder`);
- the `output_dict` layout `track_step` reads (`cond_frame_outputs`, `non_cond_frame_outputs`,
  each entry's `maskmem_features`, `maskmem_pos_enc`, `obj_ptr`);
- `SAM2ImagePredictor`'s `_features`, `_orig_hw`, `_is_image_set` (to reuse an image's encoder
  output) and `_bb_feat_sizes` (hard-coded for 1024 px upstream);
- `RoPEAttention._separate_heads`, `freqs_cis`, `compute_cis`, `rope_k_repeat` and
  `apply_rotary_enc` (the folded memory attention subclasses upstream's module);
- the compiled extension `sam2._C` (hole filling) and `build_sam.HF_MODEL_ID_TO_FILENAMES`.

`fast_memory_attention` also replaces submodules by their upstream attribute names
(`memory_attention.layers[i].cross_attn_image`, `q_proj`, `memory_encoder.pix_feat_proj`); those
are listed in `MODULE_ATTRIBUTES` and checked on the built model by `missing(model)`.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import sam2
import torch
from sam2.build_sam import HF_MODEL_ID_TO_FILENAMES, build_sam2, build_sam2_video_predictor
from sam2.modeling.position_encoding import apply_rotary_enc
from sam2.modeling.sam.transformer import RoPEAttention
from sam2.modeling.sam2_base import SAM2Base
from sam2.sam2_image_predictor import SAM2ImagePredictor
from sam2.sam2_video_predictor import SAM2VideoPredictor
from sam2.utils.misc import fill_holes_in_mask_scores

__all__ = [
    "HF_MODEL_ID_TO_FILENAMES",
    "RoPEAttention",
    "SAM2Base",
    "SAM2ImagePredictor",
    "SAM2VideoPredictor",
    "apply_rotary_enc",
    "build_sam2",
    "build_sam2_video_predictor",
    "fill_holes_in_mask_scores",
]

# Private (or undocumented) names of upstream classes, each checked by `missing()`.
CLASS_ATTRIBUTES: dict[type, tuple[str, ...]] = {
    SAM2Base: ("_prepare_backbone_features", "_encode_new_memory", "track_step"),
    RoPEAttention: ("_separate_heads",),
}
# Instance attributes set by upstream's constructors: `SAM2ImagePredictor.__init__` and
# `RoPEAttention.__init__` (and its base `Attention.__init__`) assign them, so they are looked
# for in the source of the constructors of the class and its bases.
INIT_ATTRIBUTES: dict[type, tuple[str, ...]] = {
    SAM2ImagePredictor: ("_features", "_orig_hw", "_is_image_set", "_bb_feat_sizes"),
    RoPEAttention: (
        "freqs_cis",
        "compute_cis",
        "rope_k_repeat",
        "q_proj",
        "k_proj",
        "v_proj",
        "out_proj",
    ),
}
# Submodules of a built model that `fast_memory_attention` replaces in its view.
MODULE_ATTRIBUTES = (
    "memory_attention.layers",
    "memory_encoder.pix_feat_proj",
    "memory_encoder.position_encoding",
)
LAYER_ATTRIBUTES = ("self_attn", "cross_attn_image")


class UpstreamChangedError(RuntimeError):
    """The installed sam2 lacks names this tracker was written against (sam2 1.1.0)."""


def missing(model: torch.nn.Module | None = None) -> list[str]:
    """The upstream names the tracker uses that the installed sam2 (and `model`) lack."""
    import inspect

    absent = [
        f"{cls.__name__}.{name}"
        for cls, names in CLASS_ATTRIBUTES.items()
        for name in names
        if not hasattr(cls, name)
    ]
    for cls, names in INIT_ATTRIBUTES.items():
        source = "".join(
            inspect.getsource(base.__init__)
            for base in cls.__mro__
            if "__init__" in vars(base)
            if base.__module__.startswith("sam2")
        )
        absent += [f"{cls.__name__}.{name}" for name in names if f"self.{name} =" not in source]
    if importlib.util.find_spec("sam2.build_sam") is None:
        absent.append("sam2.build_sam")
    if model is not None:
        for path in MODULE_ATTRIBUTES:
            owner = model
            for part in path.split("."):
                owner = getattr(owner, part, None)
            if owner is None:
                absent.append(f"model.{path}")
        layers = getattr(getattr(model, "memory_attention", None), "layers", None) or []
        absent += [
            f"model.memory_attention.layers[{i}].{name}"
            for i, layer in enumerate(layers)
            for name in LAYER_ATTRIBUTES
            if not hasattr(layer, name)
        ]
    return absent


def check(model: torch.nn.Module | None = None) -> None:
    """Raise `UpstreamChangedError` naming every missing upstream name."""
    absent = missing(model)
    if absent:
        raise UpstreamChangedError(
            f"sam2 {getattr(sam2, '__version__', '(unknown version)')} lacks what this tracker "
            f"uses from sam2 1.1.0: {', '.join(absent)}; install sam2==1.1.0"
        )


def package_dir() -> Path:
    """The installed sam2 package's folder (its `configs/` live there)."""
    return Path(sam2.__file__).parent


def cuda_extension_available() -> bool:
    """Whether sam2's compiled extension (`sam2._C`, used by hole filling) is importable."""
    try:
        from sam2 import _C  # noqa: F401
    except ImportError:
        return False
    return True


def prepare_backbone_features(model: SAM2Base, backbone_out: dict) -> tuple:
    """`(vision_feats, vision_pos_embeds, feat_sizes)` of `forward_image`'s output, as
    `SAM2VideoPredictor._get_image_feature` gets them."""
    _, feats, pos_embeds, feat_sizes = model._prepare_backbone_features(backbone_out)
    return feats, pos_embeds, feat_sizes


def encode_new_memory(model: SAM2Base, **inputs: object) -> torch.Tensor:
    """The memory features of a frame's mask (`SAM2Base._encode_new_memory`, keyword arguments
    as upstream names them); its position encoding is dropped (equal for every frame)."""
    features, _ = model._encode_new_memory(**inputs)
    return features


def memory_output(features: torch.Tensor | None, pos_enc: list, obj_ptr: torch.Tensor) -> dict:
    """One frame's entry of the `output_dict` that `track_step` reads."""
    return {"maskmem_features": features, "maskmem_pos_enc": pos_enc, "obj_ptr": obj_ptr}


def output_dict(conditioning: dict[int, dict], recent: dict[int, dict]) -> dict:
    """`track_step`'s `output_dict`: conditioning and other frames' entries by frame index."""
    return {"cond_frame_outputs": conditioning, "non_cond_frame_outputs": recent}


def set_backbone_feature_sizes(predictor: SAM2ImagePredictor, image_size: int) -> None:
    """Upstream hard-codes a 1024 px model's backbone sizes; set them for `image_size`."""
    stride4 = image_size // 4
    predictor._bb_feat_sizes = [(stride4 // k, stride4 // k) for k in (1, 2, 4)]


def image_features(predictor: SAM2ImagePredictor) -> dict:
    """The encoder output `set_image` left in the predictor."""
    return predictor._features


def use_image_features(
    predictor: SAM2ImagePredictor, features: dict, height: int, width: int
) -> None:
    """Make the predictor answer `predict` for an image whose features were computed before."""
    predictor._features = features
    predictor._orig_hw = [(height, width)]
    predictor._is_image_set = True


def separate_heads(attention: RoPEAttention, x: torch.Tensor) -> torch.Tensor:
    """(B, tokens, dim) -> (B, heads, tokens, dim / heads), as upstream's attention splits."""
    return attention._separate_heads(x, attention.num_heads)


def rotary_frequencies(attention: RoPEAttention, queries: int, device: torch.device) -> object:
    """The rotary frequencies for a square grid of `queries` tokens, cached on the module as
    `RoPEAttention.forward` caches them."""
    attention.freqs_cis = attention.freqs_cis.to(device)
    if attention.freqs_cis.shape[0] != queries:
        side = math.sqrt(queries)
        attention.freqs_cis = attention.compute_cis(end_x=side, end_y=side).to(device)
    return attention.freqs_cis
