"""What the streaming engine keeps per frame and per object, and how objects share a batch."""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterator, Sequence

import torch


@dataclasses.dataclass(frozen=True)
class FrameFeatures:
    """One frame's image-encoder output, shared by every object tracked on it."""

    width: int
    height: int
    vision_feats: list[torch.Tensor]
    vision_pos_embeds: list[torch.Tensor]
    feat_sizes: list[tuple[int, int]]


@dataclasses.dataclass
class MemoryEntry:
    """What memory attention reads of one past frame."""

    frame_idx: int
    maskmem_features: torch.Tensor | None  # bfloat16 like upstream; None once too old to be read
    obj_ptr: torch.Tensor


@dataclasses.dataclass
class ObjectState:
    """Everything needed to track one object further; its size is bounded by the model config."""

    frame_idx: int  # the newest frame this object was tracked on; 0 is the starting frame
    conditioning: MemoryEntry
    recent: collections.deque[MemoryEntry]  # tracked frames, oldest first

    def tensors(self) -> Iterator[torch.Tensor]:
        for entry in (self.conditioning, *self.recent):
            if entry.maskmem_features is not None:
                yield entry.maskmem_features
            yield entry.obj_ptr

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())

    def fork(self) -> ObjectState:
        """A copy that `StreamingSam2.step` can advance while this state stays as it is: a step
        appends an entry and forgets an old entry's memory, but never changes a tensor in place,
        so the copies share their tensors."""
        recent = collections.deque(
            (dataclasses.replace(entry) for entry in self.recent), maxlen=self.recent.maxlen
        )
        return ObjectState(self.frame_idx, self.conditioning, recent)


def memory_layout(state: ObjectState) -> tuple:
    """What `track_step` reads of a state's shape: states alike in it can share a batch."""
    return (
        state.frame_idx,
        state.conditioning.frame_idx,
        tuple((e.frame_idx, e.maskmem_features is None) for e in state.recent),
    )


def stacked(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(list(tensors))


def expanded(frame: FrameFeatures, count: int) -> FrameFeatures:
    """The frame's features seen by `count` objects at once (views, as upstream expands them)."""
    if count == 1:
        return frame
    return dataclasses.replace(
        frame,
        vision_feats=[f.expand(-1, count, -1) for f in frame.vision_feats],
        vision_pos_embeds=[p.expand(-1, count, -1) for p in frame.vision_pos_embeds],
    )
