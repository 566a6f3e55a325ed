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


def per_frame(calls: list[dict], objects: int) -> list[dict]:
    """Upstream 1.1.0 tracks each object on its own (`frames_tracked_per_obj`): its `objects`
    calls of a frame joined along the batch, as our engine makes one call for them."""
    groups = [calls[i : i + objects] for i in range(0, len(calls), objects)]
    return [
        {
            "memory": torch.cat([c["memory"] for c in group], dim=1),
            "memory_pos": torch.cat([c["memory_pos"] for c in group], dim=1),
            "num_obj_ptr_tokens": group[0]["num_obj_ptr_tokens"],
        }
        for group in groups
    ]


def assert_same_memory_inputs(
    upstream: list[dict], ours: list[dict], batched: bool = False
) -> None:
    """Equal memory-attention inputs, call by call. `batched`: ours stepped objects together that
    upstream stepped alone; the float rounding of a batch can then move a stored bfloat16 memory
    by one step of its precision (1/128 of its value), so memories are compared within that.
    Positional inputs, which carry every frame distance, are compared as closely either way."""
    assert len(upstream) == len(ours) and upstream
    tolerance = {"rtol": 2**-7, "atol": 2**-7} if batched else {}
    for frame, (a, b) in enumerate(zip(upstream, ours, strict=True), start=1):
        assert a["num_obj_ptr_tokens"] == b["num_obj_ptr_tokens"], f"frame {frame}"
        assert a["memory"].shape == b["memory"].shape, f"frame {frame}"
        torch.testing.assert_close(
            a["memory"], b["memory"], msg=f"memory, frame {frame}", **tolerance
        )
        torch.testing.assert_close(a["memory_pos"], b["memory_pos"], msg=f"pos, frame {frame}")


Prompt = np.ndarray | Box  # a mask of the frame's size, or a box


def _prompt_box(prompt: Prompt) -> bool:
    return not isinstance(prompt, np.ndarray)


def upstream_prompted_masks(
    model: SAM2VideoPredictor,
    video: SyntheticVideo,
    prompts: dict[int, list[Prompt]],
    start: int,
    num_frames: int,
    reverse: bool = False,
) -> list[list[np.ndarray]]:
    """Upstream's masks, per frame from `start` on (one per object), with every object prompted
    on each frame of `prompts` (`add_new_mask` or `add_new_points_or_box` in a fresh inference
    state), then `propagate_in_video(start_frame_idx=start)`, as a user prompting again would."""
    state = model.init_state(str(video.folder))
    for frame_idx, objects in prompts.items():
        for obj_id, prompt in enumerate(objects, start=1):
            if _prompt_box(prompt):
                model.add_new_points_or_box(state, frame_idx, obj_id, box=np.array(prompt))
            else:
                model.add_new_mask(state, frame_idx=frame_idx, obj_id=obj_id, mask=prompt)
    run = model.propagate_in_video(
        state, start_frame_idx=start, max_frame_num_to_track=num_frames - 1, reverse=reverse
    )
    return [[(logits[i, 0] > 0).cpu().numpy() for i in range(len(ids))] for _, ids, logits in run]


def engine_prompted_masks(
    engine: StreamingSam2,
    video: SyntheticVideo,
    prompts: dict[int, list[Prompt]],
    num_frames: int,
    reverse: bool = False,
) -> list[list[np.ndarray]]:
    """Our engine's masks, per frame from the last prompted frame on: each object started on the
    first frame of `prompts`, prompted again (`earlier=`) on each later one at its distance, then
    stepped frame by frame, all objects together."""
    states: list[ObjectState | None] = [None] * len(next(iter(prompts.values())))
    previous = None
    for frame_idx, objects in prompts.items():
        frame = engine.encode(video.image(frame_idx))
        distance = 0 if previous is None else abs(frame_idx - previous)
        first = []
        for i, prompt in enumerate(objects):
            start = engine.start_from_box if _prompt_box(prompt) else engine.start_from_mask
            states[i], prediction = start(frame, prompt, earlier=states[i], distance=distance)
            first.append(prediction.mask())
        previous = frame_idx
    masks = [first]
    step = -1 if reverse else 1
    for index in range(1, num_frames):
        frame = engine.encode(video.image(previous + step * index))
        masks.append([p.mask() for p in engine.step_many(frame, states)])
    return masks


def assert_masks_agree(upstream: list[list[np.ndarray]], ours: list[list[np.ndarray]]) -> None:
    """Per frame, one mask per object: IoU of at least 0.999 each, upstream's first object never
    lost (a comparison of empty masks would prove nothing)."""
    assert len(upstream) == len(ours)
    assert all(frame[0].any() for frame in upstream), "upstream lost the object: proves nothing"
    for index, (a, b) in enumerate(zip(upstream, ours, strict=True)):
        assert len(a) == len(b)
        for obj, (x, y) in enumerate(zip(a, b, strict=True)):
            assert iou(x, y) >= 0.999, f"frame {index} object {obj}: IoU {iou(x, y):.5f}"


def box_of(mask: np.ndarray, margin: float = 3.0) -> Box:
    ys, xs = mask.nonzero()
    return (xs.min() - margin, ys.min() - margin, xs.max() + 1 + margin, ys.max() + 1 + margin)
