"""A streaming SAM2 video tracker: frames arrive one at a time, each object keeps a bounded state.

Upstream's `SAM2VideoPredictor` wants the whole video up front and keeps every frame's outputs.
Here each step calls upstream's own `track_step` and memory encoder (nothing of SAM2 is
re-implemented), but with an `output_dict` rebuilt from a lean per-object state that holds only
what memory attention reads: the conditioning frame, the newest `num_maskmem - 1` memory frames,
and the object pointers of the newest `max_obj_ptrs_in_encoder - 1` frames. Everything shared by
all frames and objects (the memories' spatial positional encoding) is held once, by the engine.

The engine knows nothing of CVAT; `tracker.cvat` adapts it to CVAT's protocols.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import logging
from collections.abc import Iterator, Sequence

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from sam2.sam2_video_predictor import SAM2VideoPredictor
from sam2.utils.misc import fill_holes_in_mask_scores

from tracker.engine.frames import to_model_input
from tracker.engine.precision import inference_context

_log = logging.getLogger(__name__)

# Upstream normalises the temporal encoding of object pointers by min(num_frames, 16) - 1. A stream
# has no known length, so we assume a video of at least 16 frames: that is what upstream computes
# for every such video. (CVAT's tracker passes frame_idx + 1 and so drifts in the first 15 frames.)
_ASSUMED_NUM_FRAMES = 1 << 31


def _holes_fillable() -> bool:
    """Hole filling needs sam2's compiled CUDA extension; upstream silently skips it without."""
    try:
        from sam2 import _C  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def _downscaled(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased bilinear resize of a mask prompt to the model's size, as upstream does."""
    resize = functools.partial(
        F.interpolate, size=(size, size), align_corners=False, mode="bilinear", antialias=True
    )
    try:
        return resize(mask)
    except RuntimeError:
        if mask.device.type == "cpu":
            raise
        # CUDA's antialiased kernel needs shared memory that grows with the scale factor and
        # refuses very large frames (an 8000x6000 mask to 64 px); the CPU kernel does the same sum.
        return resize(mask.cpu()).to(mask.device)


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


@dataclasses.dataclass(frozen=True)
class Prediction:
    """An object's mask logits on one frame and SAM2's score for the object being present."""

    low_res_logits: torch.Tensor  # (1, 1, image_size / 4, image_size / 4)
    object_score: float
    width: int
    height: int

    @property
    def present(self) -> bool:
        return self.object_score > 0

    def mask(self) -> np.ndarray:
        """The binary mask at the frame's original size, resized as upstream does."""
        logits = self.low_res_logits
        if logits.shape[-2:] != (self.height, self.width):
            logits = F.interpolate(
                logits.float(), size=(self.height, self.width), mode="bilinear", align_corners=False
            )
        return (logits[0, 0] > 0).cpu().numpy()


class StreamingSam2:
    """Tracks objects frame by frame with upstream SAM2's model, giving upstream's masks."""

    def __init__(self, model: SAM2VideoPredictor, dtype: torch.dtype = torch.float32) -> None:
        if model.memory_temporal_stride_for_eval != 1:
            raise ValueError("only memory_temporal_stride_for_eval=1 is supported when streaming")
        self.model = model
        self.device = model.device
        self.dtype = dtype
        self.image_size: int = model.image_size
        self._memory_frames = model.num_maskmem - 1
        pointer_frames = model.max_obj_ptrs_in_encoder - 1 if model.use_obj_ptrs_in_encoder else 0
        self.history = max(self._memory_frames, pointer_frames)
        self._maskmem_pos_enc = self._memory_pos_enc()
        self._fill_hole_area = model.fill_hole_area if _holes_fillable() else 0
        if model.fill_hole_area and not self._fill_hole_area:
            _log.warning(
                "Filling small holes in masks needs sam2's CUDA extension; skipped on this machine "
                "(upstream SAM2 skips it too)"
            )

    def _inference(self) -> contextlib.AbstractContextManager:
        return inference_context(self.device, self.dtype)

    def encode(self, image: PIL.Image.Image) -> FrameFeatures:
        """Run the image encoder once for a frame; every object on it reuses the result."""
        with self._inference():
            pixels = to_model_input(image, self.image_size).to(self.device)
            backbone_out = self.model.forward_image(pixels[None])
            _, feats, pos_embeds, feat_sizes = self.model._prepare_backbone_features(backbone_out)
        return FrameFeatures(image.width, image.height, feats, pos_embeds, feat_sizes)

    def start_from_mask(
        self, frame: FrameFeatures, mask: np.ndarray
    ) -> tuple[ObjectState, Prediction]:
        """Start an object from a binary mask of the frame's size (upstream `add_new_mask`)."""
        with self._inference():
            mask_inputs = torch.from_numpy(np.asarray(mask, dtype=bool))[None, None]
            mask_inputs = mask_inputs.float().to(self.device)
            if mask_inputs.shape[-2:] != (self.image_size, self.image_size):
                mask_inputs = _downscaled(mask_inputs, self.image_size)
                mask_inputs = (mask_inputs >= 0.5).float()
            return self._start(frame, point_inputs=None, mask_inputs=mask_inputs)

    def start_from_box(
        self, frame: FrameFeatures, box: Sequence[float]
    ) -> tuple[ObjectState, Prediction]:
        """Start an object from a box (x1, y1, x2, y2) in frame pixels (upstream's box prompt)."""
        with self._inference():
            coords = torch.tensor(box, dtype=torch.float32).reshape(1, 2, 2)
            coords = coords / torch.tensor([frame.width, frame.height]) * self.image_size
            labels = torch.tensor([[2, 3]], dtype=torch.int32)
            point_inputs = {
                "point_coords": coords.to(self.device),
                "point_labels": labels.to(self.device),
            }
            return self._start(frame, point_inputs=point_inputs, mask_inputs=None)

    def _start(
        self, frame: FrameFeatures, point_inputs: dict | None, mask_inputs: torch.Tensor | None
    ) -> tuple[ObjectState, Prediction]:
        out = self._track_step(
            frame,
            frame_idx=0,
            output_dict={"cond_frame_outputs": {}, "non_cond_frame_outputs": {}},
            point_inputs=point_inputs,
            mask_inputs=mask_inputs,
            # Upstream runs the memory encoder on the prompt frame separately (below).
            run_mem_encoder=False,
        )
        pred_masks = self._fill_holes(out["pred_masks"])
        # Upstream encodes the prompt frame's memory from the (hole-filled) low-res mask, upsampled
        # and binarised, when propagation starts (`propagate_in_video_preflight`).
        high_res_masks = F.interpolate(
            pred_masks,
            size=(self.image_size, self.image_size),
            mode="bilinear",
            align_corners=False,
        )
        maskmem_features, _ = self.model._encode_new_memory(
            current_vision_feats=frame.vision_feats,
            feat_sizes=frame.feat_sizes,
            pred_masks_high_res=high_res_masks,
            object_score_logits=out["object_score_logits"],
            is_mask_from_pts=True,
        )
        conditioning = MemoryEntry(0, maskmem_features.to(torch.bfloat16), out["obj_ptr"])
        state = ObjectState(0, conditioning, collections.deque(maxlen=self.history))
        return state, self._prediction(frame, pred_masks, out["object_score_logits"])

    def step(self, frame: FrameFeatures, state: ObjectState) -> Prediction:
        """Track `state` onto the next frame; the state changes only if this succeeds."""
        frame_idx = state.frame_idx + 1
        with self._inference():
            out = self._track_step(
                frame,
                frame_idx=frame_idx,
                output_dict=self._output_dict(state),
                point_inputs=None,
                mask_inputs=None,
                run_mem_encoder=True,
            )
            pred_masks = self._fill_holes(out["pred_masks"])
            prediction = self._prediction(frame, pred_masks, out["object_score_logits"])
            maskmem_features = out["maskmem_features"].to(torch.bfloat16)
            entry = MemoryEntry(frame_idx, maskmem_features, out["obj_ptr"])
        state.recent.append(entry)
        if len(state.recent) > self._memory_frames:
            # Only the newest num_maskmem - 1 frames are read as memory; older ones keep a pointer.
            state.recent[-self._memory_frames - 1].maskmem_features = None
        state.frame_idx = frame_idx
        return prediction

    def _track_step(self, frame: FrameFeatures, frame_idx: int, **inputs) -> dict:
        """Upstream's `track_step` on a frame; frame 0 is the prompt (conditioning) frame."""
        return self.model.track_step(
            frame_idx=frame_idx,
            is_init_cond_frame=frame_idx == 0,
            current_vision_feats=frame.vision_feats,
            current_vision_pos_embeds=frame.vision_pos_embeds,
            feat_sizes=frame.feat_sizes,
            num_frames=_ASSUMED_NUM_FRAMES,
            **inputs,
        )

    def _output_dict(self, state: ObjectState) -> dict:
        """The slice of upstream's per-object `output_dict` that `track_step` reads."""

        def as_output(entry: MemoryEntry) -> dict:
            return {
                "maskmem_features": entry.maskmem_features,
                "maskmem_pos_enc": self._maskmem_pos_enc,
                "obj_ptr": entry.obj_ptr,
            }

        return {
            "cond_frame_outputs": {0: as_output(state.conditioning)},
            "non_cond_frame_outputs": {e.frame_idx: as_output(e) for e in state.recent},
        }

    def _memory_pos_enc(self) -> list[torch.Tensor]:
        """The memories' spatial encoding, equal for all frames and objects: one copy, made up
        front, so that a state restored from a store steps without a start in this process.

        The memory encoder computes it from its output's shape alone (a sine encoding of the
        stride-16 feature map, `.to(dtype)` of its output, which autocast makes `self.dtype`).
        """
        size = self.model.sam_image_embedding_size  # image_size // backbone_stride
        with self._inference():
            features = torch.zeros(
                1, self.model.mem_dim, size, size, device=self.device, dtype=self.dtype
            )
            encoding = self.model.memory_encoder.position_encoding(features).to(features.dtype)
        return [encoding]

    def restore(
        self, frame_idx: int, conditioning: MemoryEntry, recent: Sequence[MemoryEntry]
    ) -> ObjectState:
        """Rebuild an object's state from its entries (oldest first), e.g. read from a store."""
        return ObjectState(frame_idx, conditioning, collections.deque(recent, maxlen=self.history))

    def _fill_holes(self, pred_masks: torch.Tensor) -> torch.Tensor:
        if self._fill_hole_area > 0:
            return fill_holes_in_mask_scores(pred_masks, self._fill_hole_area)
        return pred_masks

    @staticmethod
    def _prediction(
        frame: FrameFeatures, pred_masks: torch.Tensor, object_score_logits: torch.Tensor
    ) -> Prediction:
        return Prediction(pred_masks, float(object_score_logits.item()), frame.width, frame.height)
