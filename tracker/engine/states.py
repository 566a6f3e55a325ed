"""What the streaming engine keeps per frame and per object, and how objects share a batch."""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterator, Sequence

import torch

from tracker.engine import upstream


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

    frame_idx: int  # the newest frame this object was tracked on, counted in walking direction
    # The prompted frames, oldest first; the first prompt is frame 0. Several after the object was
    # prompted again (`StreamingSam2.start_from_mask(..., earlier=...)`), each with its true
    # distance to the others, as upstream's `cond_frame_outputs`.
    conditioning: tuple[MemoryEntry, ...]
    recent: collections.deque[MemoryEntry]  # tracked frames, oldest first

    def tensors(self) -> Iterator[torch.Tensor]:
        for entry in (*self.conditioning, *self.recent):
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
        tuple(e.frame_idx for e in state.conditioning),
        tuple((e.frame_idx, e.maskmem_features is None) for e in state.recent),
    )


def prompted_again(
    earlier: ObjectState, entry: MemoryEntry, distance: int, max_frames: int
) -> tuple[MemoryEntry, ...]:
    """The prompted frames of an object prompted again with `entry`, `distance` frames (>= 1)
    past `earlier`'s newest prompted frame: the newest `max_frames - 1` of `earlier`'s, as they
    are (an entry keeps its frame number for good, so a store may name its tensors by it), and
    `entry` at its frame number."""
    if distance < 1:
        raise ValueError("an object is prompted again on a later frame of its walk")
    keep = max_frames - 1
    kept = earlier.conditioning[-keep:] if keep else ()
    newest = earlier.conditioning[-1].frame_idx + distance
    return (*kept, dataclasses.replace(entry, frame_idx=newest))


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


def batch_output_dict(batch: Sequence[ObjectState], maskmem_pos_enc: list[torch.Tensor]) -> dict:
    """The slice of upstream's `output_dict` that `track_step` reads, for states of one memory
    layout: each entry's tensors stacked over the objects, as upstream batches them, with the
    memories' spatial encoding (equal for every frame and object) expanded to the batch."""
    pos_enc = [p.expand(len(batch), -1, -1, -1) for p in maskmem_pos_enc]

    def as_output(entries: Sequence[MemoryEntry]) -> dict:
        features = [e.maskmem_features for e in entries]
        return upstream.memory_output(
            None if features[0] is None else stacked(features),
            pos_enc,
            stacked([e.obj_ptr for e in entries]),
        )

    conditioning = zip(*(state.conditioning for state in batch), strict=True)
    recent = zip(*(state.recent for state in batch), strict=True)
    return upstream.output_dict(
        {e[0].frame_idx: as_output(e) for e in conditioning},
        {e[0].frame_idx: as_output(e) for e in recent},
    )
