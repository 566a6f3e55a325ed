"""An object prompted again keeps its earlier prompted frames: our masks and memory-attention
inputs equal upstream `SAM2VideoPredictor`'s given the same prompts on the same frames (issue 26).

Upstream: `add_new_mask` / `add_new_points_or_box` on frames a and b in a fresh inference state,
then `propagate_in_video(start_frame_idx=b)`, forward or backward. Ours: start on a, start again
on b with `earlier=` and the distance, then step. Random weights cannot show that a second prompt
tracks better; agreement with upstream's multi-prompt predictor is what is proven here.
"""

from __future__ import annotations

import numpy as np
import pytest
from sam2_runs import (
    assert_masks_agree,
    assert_same_memory_inputs,
    box_of,
    captured_memory_attention,
    engine_prompted_masks,
    iou,
    per_frame,
    upstream_prompted_masks,
)

from tracker.engine.streaming import StreamingSam2


def _region(video, x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    mask = np.zeros_like(video.masks[0])
    mask[y1:y2, x1:x2] = True
    return mask


def _objects(video, frame: int, count: int, kind: str) -> list:
    """`count` objects' prompts on `frame`: the moving object first, then background regions."""
    masks = [video.masks[frame], _region(video, 10, 10, 70, 60), _region(video, 240, 170, 310, 230)]
    masks.append(_region(video, 20 + frame, 150, 90 + frame, 220))  # moves with the frame
    chosen = masks[:count]
    return [box_of(m) for m in chosen] if kind == "box" else chosen


@pytest.mark.parametrize(
    ("kind", "count", "frames", "reverse"),
    [
        ("mask", 1, (0, 5), False),
        ("mask", 1, (24, 17), True),
        ("box", 1, (0, 5), False),
        ("box", 1, (24, 17), True),
        ("mask", 4, (2, 6), False),
        ("box", 4, (20, 14), True),
    ],
)
def test_two_prompts_match_upstream(tiny_model, video, kind, count, frames, reverse):
    prompts = {f: _objects(video, f, count, kind) for f in frames}
    steps = 8
    with captured_memory_attention(tiny_model) as upstream_calls:
        upstream = upstream_prompted_masks(tiny_model, video, prompts, frames[-1], steps, reverse)
    with captured_memory_attention(tiny_model) as our_calls:
        ours = engine_prompted_masks(StreamingSam2(tiny_model), video, prompts, steps, reverse)
    assert_masks_agree(upstream, ours)
    # The distances too, which the masks barely show.
    assert_same_memory_inputs(per_frame(upstream_calls, count), our_calls, batched=count > 1)


def test_memory_inputs_match_upstream_with_a_prompt_beyond_the_pointer_window(tiny_model, video):
    """Frame 0's prompt stays read past 15 frames (its pointer at its true distance, 25 frames
    on the last step, normalised as upstream does), beside frame 5's and the tracked frames."""
    prompts = {f: _objects(video, f, 1, "mask") for f in (0, 5)}
    steps = 21
    with captured_memory_attention(tiny_model) as upstream_calls:
        upstream_prompted_masks(tiny_model, video, prompts, 5, steps)
    with captured_memory_attention(tiny_model) as our_calls:
        engine_prompted_masks(StreamingSam2(tiny_model), video, prompts, steps)
    assert_same_memory_inputs(upstream_calls, our_calls)
    # Both prompted frames' pointers and the 15 newest tracked frames', 4 tokens each.
    assert our_calls[-1]["num_obj_ptr_tokens"] == (2 + 15) * 4


def test_only_the_newest_prompted_frames_are_kept(tiny_model, video):
    """With 2 prompted frames at most, prompts on 0, 3 and 7 condition as upstream's on 3 and 7."""
    prompts = {f: _objects(video, f, 1, "mask") for f in (0, 3, 7)}
    newest = {f: prompts[f] for f in (3, 7)}
    engine = StreamingSam2(tiny_model, max_conditioning_frames=2)
    ours = engine_prompted_masks(engine, video, prompts, 6)
    assert_masks_agree(upstream_prompted_masks(tiny_model, video, newest, 7, 6), ours)
    everything = upstream_prompted_masks(tiny_model, video, prompts, 7, 6)
    assert any(iou(a[0], b[0]) < 0.999 for a, b in zip(everything, ours, strict=True)), (
        "frame 0's prompt changes nothing: the bound is not shown"
    )


def test_a_prompted_again_state_leaves_the_earlier_one_and_counts_its_frames(tiny_model, video):
    engine = StreamingSam2(tiny_model)
    first, _ = engine.start_from_mask(engine.encode(video.image(0)), video.masks[0])
    engine.step(engine.encode(video.image(1)), first)
    before = (first.frame_idx, len(first.recent), first.nbytes())
    again, _ = engine.start_from_mask(
        engine.encode(video.image(4)), video.masks[4], earlier=first, distance=4
    )
    assert (first.frame_idx, len(first.recent), first.nbytes()) == before
    assert [e.frame_idx for e in again.conditioning] == [0, 4] and again.frame_idx == 4
    assert not again.recent  # tracked frames are not carried over, as in a fresh upstream state
    single = engine.start_from_mask(engine.encode(video.image(4)), video.masks[4])[0]
    assert again.nbytes() == 2 * single.nbytes()
    with pytest.raises(ValueError, match="later frame"):
        engine.start_from_mask(engine.encode(video.image(4)), video.masks[4], first, distance=0)
