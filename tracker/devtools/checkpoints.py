"""Random-weight SAM2 checkpoints in an offline Hugging Face cache, built from sam2's own configs.

Real weights cannot be downloaded here, so tests prove the loading code and the tracking mechanism
with random weights. SAM2's object-score head is biased upwards so that objects stay present (with
random weights the score is often negative, which would empty every mask).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from sam2.build_sam import HF_MODEL_ID_TO_FILENAMES, build_sam2

OBJECT_SCORE_BIAS = 8.0
_FAKE_COMMIT = hashlib.sha1(b"random-weights-v1").hexdigest()


def write_random_checkpoint(config_name: str, path: Path, seed: int = 0) -> Path:
    """Save a checkpoint of `config_name`'s architecture with seeded random weights."""
    torch.manual_seed(seed)
    model = build_sam2(config_name, ckpt_path=None, device="cpu", apply_postprocessing=False)
    with torch.no_grad():
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias += OBJECT_SCORE_BIAS
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save({"model": model.state_dict()}, partial)
    partial.rename(path)
    return path


def ensure_hf_checkpoint(hub_cache: Path, model_id: str) -> Path:
    """Put a random checkpoint where `huggingface_hub` looks for `model_id` in offline mode."""
    config_name, filename = HF_MODEL_ID_TO_FILENAMES[model_id]
    repo = hub_cache / ("models--" + model_id.replace("/", "--"))
    target = repo / "snapshots" / _FAKE_COMMIT / filename
    if not target.exists():
        write_random_checkpoint(config_name, target)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(_FAKE_COMMIT)
    return target
