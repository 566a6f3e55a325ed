"""The CPU's faster memory attention gives upstream's results and leaves upstream's model alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sam2.modeling.sam.transformer import RoPEAttention
from sam2_runs import iou

from tracker.engine import fast_memory_attention
from tracker.engine.fast_memory_attention import FoldedValueAttention, FrameShared, faster_view
from tracker.engine.streaming import StreamingSam2


@pytest.mark.parametrize(
    ("heads", "batch", "pointer_tokens", "max_scores"),
    [(1, 1, 0, 1 << 22), (1, 3, 64, 1 << 22), (2, 2, 16, 1 << 22), (1, 2, 64, 5000)],
)
def test_folded_attention_equals_upstreams(monkeypatch, heads, batch, pointer_tokens, max_scores):
    """Memory tokens of 64 dims as SAM2's, object-pointer tokens excluded from the rotary
    encoding; past `max_scores` attention weights (1024 px), upstream's own forward, exactly."""
    monkeypatch.setattr(fast_memory_attention, "_MAX_SCORES", max_scores)
    torch.manual_seed(0)
    upstream = RoPEAttention(256, heads, kv_in_dim=64, rope_k_repeat=True, feat_sizes=(16, 16))
    with torch.no_grad():  # biases that matter: the folded bias must carry them
        for linear in (upstream.v_proj, upstream.out_proj):
            linear.bias.normal_()
    folded = FoldedValueAttention.of(upstream.eval())
    queries = torch.randn(batch, 256, 256)
    memories = torch.randn(batch, 3 * 256 + pointer_tokens, 64)
    keys = memories + torch.randn_like(memories)  # memories + their positional encoding
    with torch.no_grad():
        expected = upstream(queries, keys.clone(), memories, num_k_exclude_rope=pointer_tokens)
        got = folded(queries, keys.clone(), memories, num_k_exclude_rope=pointer_tokens)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(got, expected) == (256 * keys.shape[1] > max_scores)
    assert type(upstream) is RoPEAttention
    assert folded.q_proj is upstream.q_proj  # the same parameters, not copies


def test_folded_attention_under_autocast():
    """Lower precision as a GPU session would run it (bfloat16 autocast, on the CPU here)."""
    torch.manual_seed(0)
    upstream = RoPEAttention(256, 1, kv_in_dim=64, rope_k_repeat=True, feat_sizes=(16, 16)).eval()
    folded = FoldedValueAttention.of(upstream)
    queries, memories = torch.randn(2, 256, 256), torch.randn(2, 2 * 256 + 16, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = upstream(queries, memories.clone(), memories, num_k_exclude_rope=16)
        got = folded(queries, memories.clone(), memories, num_k_exclude_rope=16)
    torch.testing.assert_close(got.float(), expected.float(), rtol=0.05, atol=0.02)


def test_frame_shared_work_is_computed_once_per_equal_input(tiny_model):
    """The first layer's self-attention: once for equal inputs (not the same tensors), again
    for other inputs, once for a batch of equal rows; always upstream's output for the input."""
    view = faster_view(tiny_model)
    shared = view.memory_attention.layers[0].self_attn
    assert isinstance(shared, FrameShared)
    assert isinstance(view.memory_encoder.pix_feat_proj, FrameShared)
    upstream = tiny_model.memory_attention.layers[0].self_attn
    assert shared.module is upstream
    calls = []
    hook = upstream.register_forward_hook(lambda module, args, out: calls.append(args[0].shape))
    try:
        torch.manual_seed(0)
        tgt, other = torch.randn(1, 256, 256), torch.randn(1, 256, 256)
        with torch.no_grad():
            first = shared(tgt, tgt, v=tgt)
            again = shared(tgt.clone(), tgt.clone(), v=tgt.clone())
            assert len(calls) == 1 and torch.equal(again, first)
            assert not torch.equal(shared(other, other, v=other), first)
            assert not torch.equal(shared(tgt, tgt, v=other), first)  # any input counts
            assert len(calls) == 3
            rows = tgt.expand(3, -1, -1).contiguous()
            batched = shared(rows, rows, v=rows)
            assert calls[-1] == (1, 256, 256) and batched.shape == (3, 256, 256)
            assert torch.equal(batched[2], first[0])
            mixed = torch.cat([tgt, other])
            shared(mixed, mixed, v=mixed)
            assert calls[-1] == (2, 256, 256)  # rows differ: computed for every row
            assert torch.equal(first, upstream(tgt, tgt, v=tgt))
    finally:
        hook.remove()


def test_the_view_leaves_upstreams_model_unchanged(tiny_model):
    original = tiny_model.memory_attention
    classes = [(type(x), type(x.cross_attn_image)) for x in original.layers]
    torch.manual_seed(0)
    curr, pos = torch.randn(256, 1, 256), torch.randn(256, 1, 256)
    memory, memory_pos = torch.randn(2 * 256 + 16, 1, 64), torch.randn(2 * 256 + 16, 1, 64)
    with torch.no_grad():
        before = original(curr, memory, pos, memory_pos, num_obj_ptr_tokens=16)
        view = faster_view(tiny_model)
        fast = view.memory_attention(curr, memory, pos, memory_pos, num_obj_ptr_tokens=16)
        after = original(curr, memory, pos, memory_pos, num_obj_ptr_tokens=16)
    assert view is not tiny_model and tiny_model.memory_attention is original
    assert [(type(x), type(x.cross_attn_image)) for x in original.layers] == classes
    assert torch.equal(before, after)
    torch.testing.assert_close(fast, before, rtol=1e-4, atol=1e-4)
    assert view.image_encoder is tiny_model.image_encoder
    assert view.memory_attention.norm.weight is original.norm.weight


def test_engine_masks_equal_the_unoptimised_engines(tiny_model, video):
    """Three objects stepped one by one (the agent's way, sharing the first self-attention)
    and as one batch, 30 frames: every mask IoU >= 0.999 with upstream's memory attention."""
    fast = StreamingSam2(tiny_model)
    plain = StreamingSam2(tiny_model, fast_memory_attention=False)
    assert fast.model is not tiny_model and plain.model is tiny_model
    assert fast.upstream_model is tiny_model
    masks = [np.roll(video.masks[0], 8 * k, axis=1) for k in range(3)]
    frame_f, frame_p = fast.encode(video.image(0)), plain.encode(video.image(0))
    one_by_one = [fast.start_from_mask(frame_f, m)[0] for m in masks]
    batched = [fast.start_from_mask(frame_f, m)[0] for m in masks]
    reference = [plain.start_from_mask(frame_p, m)[0] for m in masks]
    for index in range(1, len(video.frames)):
        image = video.image(index)
        frame_f, frame_p = fast.encode(image), plain.encode(image)
        expected = [plain.step(frame_p, s).mask() for s in reference]
        singles = [fast.step(frame_f, s).mask() for s in one_by_one]
        together = [p.mask() for p in fast.step_many(frame_f, batched)]
        for a, b, c in zip(expected, singles, together, strict=True):
            assert a.any(), f"the object was lost on frame {index}: the test would prove nothing"
            assert iou(a, b) >= 0.999 and iou(a, c) >= 0.999, f"frame {index}"
