"""Our streaming engine gives upstream SAM2VideoPredictor's masks, frame by frame."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY
from sam2_runs import (
    assert_same_memory_inputs,
    captured_memory_attention,
    engine_masks,
    iou,
    upstream_masks,
)

from tracker.engine.model_loading import build_model, resolve_model
from tracker.engine.streaming import StreamingSam2


def _assert_masks_agree(upstream, ours):
    assert len(upstream) == len(ours)
    for frame, (a, b) in enumerate(zip(upstream, ours, strict=True)):
        assert a.any(), f"upstream lost the object on frame {frame}: the test would prove nothing"
        assert iou(a, b) >= 0.999, f"frame {frame}: IoU {iou(a, b):.5f}"


def test_masks_match_upstream_at_256px(tiny_model, video):
    frames = len(video.frames)
    assert frames >= 30
    _assert_masks_agree(
        upstream_masks(tiny_model, video, frames),
        engine_masks(StreamingSam2(tiny_model), video, frames)[0],
    )


def test_box_prompt_masks_match_upstream_at_256px(tiny_model, video):
    """A box starts the object as upstream's `add_new_points_or_box` does (the box prompt the
    tracker gives SAM2 for CVAT's rectangles). Only the start differs from a mask's, so a few
    frames of propagation show it; the mask test covers the pointer window."""
    ys, xs = video.masks[0].nonzero()
    box = (xs.min() - 3.0, ys.min() - 3.0, xs.max() + 4.0, ys.max() + 4.0)
    frames = 8
    _assert_masks_agree(
        upstream_masks(tiny_model, video, frames, box=box),
        engine_masks(StreamingSam2(tiny_model), video, frames, box=box)[0],
    )


def test_memory_attention_inputs_match_upstream_past_the_pointer_window(tiny_model, video):
    frames = len(video.frames)
    assert frames > tiny_model.max_obj_ptrs_in_encoder + 2
    with captured_memory_attention(tiny_model) as upstream_calls:
        upstream_masks(tiny_model, video, frames)
    with captured_memory_attention(tiny_model) as our_calls:
        engine_masks(StreamingSam2(tiny_model), video, frames)
    assert_same_memory_inputs(upstream_calls, our_calls)
    # Past frame 16 the pointer window is full: 1 conditioning + 15 recent pointers, 4 tokens each.
    assert our_calls[-1]["num_obj_ptr_tokens"] == 16 * 4


@pytest.mark.parametrize("image_size", [512, pytest.param(1024, marks=pytest.mark.slow)])
def test_masks_match_upstream_at_larger_sizes(tiny_checkpoint, video, image_size):
    # Two tracked frames after the prompt frame; upstream still sees the whole 32-frame video so
    # that both normalise object-pointer positions by the same window.
    model = build_model(resolve_model(TINY), torch.device("cpu"), image_size=image_size)
    _assert_masks_agree(
        upstream_masks(model, video, 3), engine_masks(StreamingSam2(model), video, 3)[0]
    )


def test_state_size_is_flat_past_the_pointer_window(tiny_model, video):
    engine = StreamingSam2(tiny_model)
    _, state20 = engine_masks(engine, video, 20)
    _, state40 = engine_masks(engine, video, 40)
    assert state40.frame_idx == 39
    assert state20.nbytes() == state40.nbytes()
    # 1 conditioning + 6 memory frames of bfloat16 features, 16 float32 pointers.
    feats = 7 * 64 * 16 * 16 * 2
    assert state40.nbytes() == feats + 16 * 256 * 4


def test_state_size_is_the_same_after_20_and_1000_steps(tiny_checkpoint, video):
    # At 64 px a step is cheap, so the state can be stepped a thousand times on one frame.
    model = build_model(resolve_model(TINY), torch.device("cpu"), image_size=64)
    engine = StreamingSam2(model)
    frame = engine.encode(video.image(0))
    state, _ = engine.start_from_mask(frame, video.masks[0])
    sizes = {}
    for step in range(1, 1001):
        engine.step(frame, state)
        if step in (20, 1000):
            sizes[step] = state.nbytes()
    assert state.frame_idx == 1000
    assert sizes[20] == sizes[1000] == 7 * 64 * 4 * 4 * 2 + 16 * 256 * 4
