"""Run upstream SAM2's video predictor and our streaming engine on the same video, the same way."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from sam2.sam2_video_predictor import SAM2VideoPredictor

from tracker.devtools.synthetic import SyntheticVideo
from tracker.engine.streaming import ObjectState, StreamingSam2

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels


def upstream_masks(
    model: SAM2VideoPredictor, video: SyntheticVideo, num_frames: int, box: Box | None = None
):
    """Masks from `init_state` + `add_new_mask` (or `add_new_points_or_box` with `box`) +
    `propagate_in_video`, thresholded as upstream."""
    state = model.init_state(str(video.folder))
    if box is None:
        model.add_new_mask(state, frame_idx=0, obj_id=1, mask=video.masks[0])
    else:
        model.add_new_points_or_box(state, frame_idx=0, obj_id=1, box=np.array(box))
    masks = []
    for _, _, logits in model.propagate_in_video(state, max_frame_num_to_track=num_frames - 1):
        masks.append((logits[0, 0] > 0).cpu().numpy())
    return masks


def engine_masks(
    engine: StreamingSam2, video: SyntheticVideo, num_frames: int, box: Box | None = None
) -> tuple[list[np.ndarray], ObjectState]:
    """Our engine's masks, started from the first frame's mask (or from `box`)."""
    masks = []
    for index in range(num_frames):
        frame = engine.encode(video.image(index % len(video.frames)))
        if index == 0 and box is not None:
            state, prediction = engine.start_from_box(frame, box)
        elif index == 0:
            state, prediction = engine.start_from_mask(frame, video.masks[0])
        else:
            prediction = engine.step(frame, state)
        masks.append(prediction.mask())
    return masks, state


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@contextlib.contextmanager
def captured_memory_attention(model: SAM2VideoPredictor) -> Iterator[list[dict]]:
    """Record what every call of SAM2's memory attention receives."""
    calls: list[dict] = []
    original = model.memory_attention.forward

    def recording(curr, memory, curr_pos=None, memory_pos=None, num_obj_ptr_tokens=0):
        calls.append(
            {
                "memory": memory.detach().float().clone(),
                "memory_pos": memory_pos.detach().float().clone(),
                "num_obj_ptr_tokens": num_obj_ptr_tokens,
            }
        )
        return original(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens)

    model.memory_attention.forward = recording
    try:
        yield calls
    finally:
        del model.memory_attention.forward


def assert_same_memory_inputs(upstream: list[dict], ours: list[dict]) -> None:
    assert len(upstream) == len(ours) and upstream
    for frame, (a, b) in enumerate(zip(upstream, ours, strict=True), start=1):
        assert a["num_obj_ptr_tokens"] == b["num_obj_ptr_tokens"], f"frame {frame}"
        assert a["memory"].shape == b["memory"].shape, f"frame {frame}"
        torch.testing.assert_close(a["memory"], b["memory"], msg=f"memory, frame {frame}")
        torch.testing.assert_close(a["memory_pos"], b["memory_pos"], msg=f"pos, frame {frame}")
