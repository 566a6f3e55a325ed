"""SAM2's memory attention with less arithmetic per object, for the CPU (two changes).

1. Memories weighed before they are projected (`FoldedValueAttention`).

SAM2's memory attention cross-attends the frame's 256-dim tokens to memory tokens of only 64
dims (`kv_in_dim`): upstream's `RoPEAttention` projects every memory token's value from 64 to
256 dims, then sums those 256-dim values weighted by the attention. A row of attention weights
sums to one, so for memories M, value projection (W_v, b_v) and output projection (W_o, b_o):

    out_proj(softmax(QK^T) (M W_v^T + b_v)) = (softmax(QK^T) M) (W_o W_v)^T + (W_o b_v + b_o)

Weighing the 64-dim memories first does a quarter of the weighted sum and no projection per
memory token (7 x 256 tokens at 256 px, 7 x 4,096 at 1024 px); what remains is one 64 -> 256
projection per query (what that saves per step is in `benchmarks/results/profile-cpu-1080p.md`).
The result differs from upstream's by float rounding only (the tests hold the masks to IoU >= 0.999
with the unfolded engine's and upstream's).

2. Work that reads only the frame, once per frame (`FrameShared`). The first memory-attention
layer's self-attention and its cross-attention queries read the frame's image features, not the
object's memories, and so does the memory encoder's projection of those features: they are the
same for every object tracked on a frame. Stepped one by one (as cvat-cli's agent asks for
objects), each object after the first reuses the first one's results, bit for bit, while the
inputs are equal; stepped as one batch, they are computed for one object and shared.

Both are used on the CPU only: PyTorch's fused GPU attention kernels need values as wide as the
keys, the equality check would cost a GPU a host sync per object, and neither has been measured
on a GPU.

The model is not changed: `faster_view` returns a view of it whose changed modules are copies
holding the same parameter tensors, so upstream's predictor can run on the very model
the engine was given.
"""

from __future__ import annotations

import copy
import itertools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from tracker.engine import upstream
from tracker.engine.upstream import RoPEAttention, apply_rotary_enc

# Folding pays while one object's attention weights stay cache-sized: it was faster at 256 px
# (256 queries x 1,856 memory keys) and slower than PyTorch's fused kernel at 1024 px (4,096 x
# 28,736, computed in chunks); the figures are in `benchmarks/results/profile-cpu-1080p.md` and
# `cpu-1080p-1024-t*`. Past this many weights, upstream's forward runs.
_MAX_SCORES = 1 << 22


def _view(module: nn.Module) -> nn.Module:
    """A copy of `module` sharing its parameters and submodules, with its own table of
    submodules, so that replacing one of them in the copy leaves `module` as it was."""
    clone = copy.copy(module)
    clone._modules = dict(module._modules)
    return clone


class FoldedValueAttention(RoPEAttention):
    """SAM2's `RoPEAttention` with the value projection moved after the attention weights.

    A subclass, so that queries and keys go through upstream's own projections, heads and
    rotary encoding; only the weighted sum of values and the output projection differ.
    """

    value_output: torch.Tensor  # (heads, embedding_dim, kv_in_dim): W_o W_v, per head
    value_output_bias: torch.Tensor  # W_o b_v + b_o

    @classmethod
    def of(cls, attention: RoPEAttention) -> FoldedValueAttention:
        folded = _view(attention)
        folded.__class__ = cls
        heads, head_dim = attention.num_heads, attention.internal_dim // attention.num_heads
        with torch.no_grad():
            w_v = attention.v_proj.weight.reshape(heads, head_dim, attention.kv_in_dim)
            w_o = attention.out_proj.weight.reshape(attention.embedding_dim, heads, head_dim)
            folded.value_output = torch.einsum("ehd,hdk->hek", w_o, w_v)
            folded.value_output_bias = attention.out_proj(attention.v_proj.bias)
        return folded

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_k_exclude_rope: int = 0
    ) -> torch.Tensor:
        if self.training and self.dropout_p > 0:
            raise RuntimeError("folded attention is for inference; train the upstream module")
        if q.shape[-2] * k.shape[-2] > _MAX_SCORES:
            return super().forward(q, k, v, num_k_exclude_rope)
        q = upstream.separate_heads(self, self.q_proj(q))
        k = upstream.separate_heads(self, self.k_proj(k))
        q, k = self._rotated(q, k, num_k_exclude_rope)
        weighed = self._weighed(q * (1 / math.sqrt(q.shape[-1])), k, v.to(q.dtype))
        weights = self.value_output.to(weighed.dtype)
        bias = self.value_output_bias.to(weighed.dtype)
        if self.num_heads == 1:
            return F.linear(weighed[:, 0], weights[0], bias)
        return torch.einsum("bhqk,hek->bqe", weighed, weights) + bias

    @staticmethod
    def _weighed(q: torch.Tensor, k: torch.Tensor, memories: torch.Tensor) -> torch.Tensor:
        """softmax(q k^T) memories, (B, heads, queries, kv_in_dim), one object and head at a
        time, so that the weights in flight stay cache-sized."""
        batch, heads, queries, _ = q.shape
        out = q.new_empty(batch, heads, queries, memories.shape[-1])
        for b, h in itertools.product(range(batch), range(heads)):
            scores = torch.matmul(q[b, h], k[b, h].transpose(0, 1))
            out[b, h] = torch.softmax(scores, dim=-1) @ memories[b]
        return out

    def _rotated(
        self, q: torch.Tensor, k: torch.Tensor, num_k_exclude_rope: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotary encoding of the queries and of all keys but the excluded (object-pointer)
        ones, as `RoPEAttention.forward` applies it."""
        freqs_cis = upstream.rotary_frequencies(self, q.shape[-2], q.device)
        if q.shape[-2] != k.shape[-2] and not self.rope_k_repeat:
            raise ValueError("keys of another length than the queries need rope_k_repeat")
        num_k_rope = k.size(-2) - num_k_exclude_rope
        q, k[:, :, :num_k_rope] = apply_rotary_enc(
            q, k[:, :, :num_k_rope], freqs_cis=freqs_cis, repeat_freqs_k=self.rope_k_repeat
        )
        return q, k


def foldable(attention: nn.Module) -> bool:
    """Folding pays where memories are narrower than a head (SAM2: 64 against 256)."""
    return (
        isinstance(attention, RoPEAttention)
        and attention.kv_in_dim < attention.internal_dim // attention.num_heads
    )


class FrameShared(nn.Module):
    """`module`, keeping its last inputs and output: equal inputs (the next object on the same
    frame) get the same output without the work, and a batch whose rows are all equal (a
    frame's objects stepped together) is computed for its first row only. The output is
    returned as is, shared: the modules this wraps are ones whose callers only read it."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self._last: tuple[tuple, torch.Tensor] | None = None

    def forward(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        inputs = (*args, *kwargs.items())
        last = self._last  # one read: another thread may replace it meanwhile
        if last is not None and _all_equal(last[0], inputs):
            return last[1]
        batch = args[0].shape[0]
        if batch > 1 and all(_equal(a, a[:1].expand_as(a)) for a in _tensors(inputs)):
            first = {k: v[:1] for k, v in kwargs.items()}
            out = self.module(*(a[:1] for a in args), **first)
            out = out.expand(batch, *out.shape[1:])
        else:
            out = self.module(*args, **kwargs)
        self._last = (inputs, out)
        return out


def _tensors(inputs: tuple) -> list[torch.Tensor]:
    return [x[1] if isinstance(x, tuple) else x for x in inputs]


def _all_equal(a: tuple, b: tuple) -> bool:
    """Equal positional and keyword inputs (keywords by name, in the caller's order)."""
    names = [x[0] if isinstance(x, tuple) else None for x in a]
    if len(a) != len(b) or names != [x[0] if isinstance(x, tuple) else None for x in b]:
        return False
    return all(map(_equal, _tensors(a), _tensors(b)))


def _equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))


def faster_view(model: nn.Module) -> nn.Module:
    """A view of a SAM2 model whose memory attention weighs memories before projecting them and
    which computes what reads only the frame once per frame; `model` itself is left unchanged."""
    view, attention = _view(model), _view(model.memory_attention)
    layers = attention.layers = _view(model.memory_attention.layers)
    for index, layer in enumerate(model.memory_attention.layers):
        layer = layers[index] = _view(layer)
        cross = layer.cross_attn_image
        if foldable(cross):
            cross = layer.cross_attn_image = FoldedValueAttention.of(cross)
        if index == 0:  # until the first cross-attention's keys, only the frame was read
            layer.self_attn = FrameShared(layer.self_attn)
            cross = layer.cross_attn_image = _view(cross)
            cross.q_proj = FrameShared(cross.q_proj)
    view.memory_attention = attention
    encoder = view.memory_encoder = _view(model.memory_encoder)
    encoder.pix_feat_proj = FrameShared(encoder.pix_feat_proj)
    return view
