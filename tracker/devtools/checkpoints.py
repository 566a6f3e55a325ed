"""Random-weight SAM2 checkpoints in an offline Hugging Face cache, built from sam2's own configs.

Real weights cannot be downloaded here, so tests prove the loading code and the tracking mechanism
with random weights. SAM2's object-score head is biased upwards so that objects stay present (with
random weights the score is often negative, which would empty every mask).
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import torch

from tracker.engine.model_loading import resolve_config
from tracker.engine.upstream import HF_MODEL_ID_TO_FILENAMES, build_sam2

OBJECT_SCORE_BIAS = 8.0
_FAKE_COMMIT = hashlib.sha1(b"random-weights-v1").hexdigest()


def write_random_checkpoint(config_name: str, path: Path, seed: int = 0) -> Path:
    """Save a checkpoint of `config_name`'s architecture (the short `sam2.1_hiera_t`, as the
    `config` parameter takes it, or sam2's path) with seeded random weights."""
    torch.manual_seed(seed)
    config_name = resolve_config(config_name)
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tracker.devtools.checkpoints",
        description="Write a SAM2 checkpoint with random weights, to try the tracker offline "
        "(its masks are meaningless; the computation and speed are the real model's).",
    )
    parser.add_argument("config", help="e.g. sam2.1_hiera_t, sam2.1_hiera_s, sam2.1_hiera_b+")
    parser.add_argument("path", type=Path, help="the .pt file to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_random_checkpoint(args.config, args.path, args.seed))


if __name__ == "__main__":
    main()
