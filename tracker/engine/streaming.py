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
import logging
from collections.abc import Sequence

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

from tracker.engine import upstream
from tracker.engine.fast_memory_attention import faster_view
from tracker.engine.frames import to_model_input
from tracker.engine.precision import inference_context
from tracker.engine.prompt_inputs import box_inputs, mask_inputs
from tracker.engine.results import Prediction
from tracker.engine.states import (
    FrameFeatures,
    MemoryEntry,
    ObjectState,
    batch_output_dict,
    expanded,
    memory_layout,
    prompted_again,
)

__all__ = ["FrameFeatures", "MemoryEntry", "ObjectState", "Prediction", "StreamingSam2"]

_log = logging.getLogger(__name__)

# Upstream normalises the temporal encoding of object pointers by min(num_frames, 16) - 1. A stream
# has no known length, so we assume a video of at least 16 frames: that is what upstream computes
# for every such video. (CVAT's tracker passes frame_idx + 1 and so drifts in the first 15 frames.)
_ASSUMED_NUM_FRAMES = 1 << 31
DEFAULT_CONDITIONING_FRAMES = 4


def _holes_fillable() -> bool:
    """Hole filling needs sam2's compiled CUDA extension; upstream silently skips it without."""
    return upstream.cuda_extension_available() and torch.cuda.is_available()


class StreamingSam2:
    """Tracks objects frame by frame with upstream SAM2's model, giving upstream's masks."""

    def __init__(
        self,
        model: upstream.SAM2VideoPredictor,
        dtype: torch.dtype = torch.float32,
        fast_memory_attention: bool | None = None,
        max_conditioning_frames: int = DEFAULT_CONDITIONING_FRAMES,
    ) -> None:
        """`fast_memory_attention`: memory attention with less arithmetic per object
        (`tracker.engine.fast_memory_attention`); by default on the CPU, where it was measured.
        `max_conditioning_frames`: the prompted frames an object keeps when prompted again (the
        newest ones); each adds a memory frame and a pointer to its state and its steps."""
        if model.memory_temporal_stride_for_eval != 1:
            raise ValueError("only memory_temporal_stride_for_eval=1 is supported when streaming")
        if max_conditioning_frames < 1:
            raise ValueError("an object keeps at least the frame it was prompted on")
        self.max_conditioning_frames = max_conditioning_frames
        if fast_memory_attention is None:
            fast_memory_attention = model.device.type == "cpu"
        self.upstream_model = model  # as given, unchanged: upstream's predictor can run on it
        self.model = faster_view(model) if fast_memory_attention else model
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

    def session(self) -> contextlib.AbstractContextManager:
        """The numeric context (inference mode, autocast to `dtype`) of every call here. Callers
        open it once around a whole request (encode, then start or step its objects): with
        autocast, each weight is then cast once per request instead of once per call."""
        return inference_context(self.device, self.dtype)

    def encode(self, image: PIL.Image.Image) -> FrameFeatures:
        """Run the image encoder once for a frame; every object on it reuses the result."""
        with self.session():
            pixels = to_model_input(image, self.image_size).to(self.device)
            backbone_out = self.model.forward_image(pixels[None])
            feats, pos_embeds, feat_sizes = upstream.prepare_backbone_features(
                self.model, backbone_out
            )
        return FrameFeatures(image.width, image.height, feats, pos_embeds, feat_sizes)

    def start_from_mask(
        self,
        frame: FrameFeatures,
        mask: np.ndarray,
        earlier: ObjectState | None = None,
        distance: int = 0,
    ) -> tuple[ObjectState, Prediction]:
        """Start an object from a binary mask of the frame's size (upstream `add_new_mask`).

        With `earlier`, the object is prompted again on a frame `distance` frames (>= 1) past
        `earlier`'s newest prompted frame in the direction it is walked: the new state is
        conditioned on this frame and on the newest `max_conditioning_frames - 1` prompted frames
        of `earlier`, at their true distances, and holds none of its tracked frames, as a fresh
        upstream inference state with prompts on all those frames propagated from this one.
        `earlier` is not changed."""
        with self.session():
            inputs = mask_inputs(mask, self.image_size, self.device)
            entry, prediction = self._prompted(frame, point_inputs=None, mask_inputs=inputs)
        return self._conditioned(entry, earlier, distance), prediction

    def start_from_box(
        self,
        frame: FrameFeatures,
        box: Sequence[float],
        earlier: ObjectState | None = None,
        distance: int = 0,
    ) -> tuple[ObjectState, Prediction]:
        """Start an object from a box (x1, y1, x2, y2) in frame pixels (upstream's box prompt);
        `earlier` and `distance` as for `start_from_mask`."""
        with self.session():
            inputs = box_inputs(box, (frame.width, frame.height), self.image_size, self.device)
            entry, prediction = self._prompted(frame, point_inputs=inputs, mask_inputs=None)
        return self._conditioned(entry, earlier, distance), prediction

    def _prompted(
        self, frame: FrameFeatures, point_inputs: dict | None, mask_inputs: torch.Tensor | None
    ) -> tuple[MemoryEntry, Prediction]:
        """The prompted frame's memory entry (at frame 0) and prediction. A prompt on a frame
        never tracked is upstream's initial conditioning frame: memory attention has no part in
        it, whatever other frames were prompted."""
        out = self._track_step(
            frame,
            frame_idx=0,
            output_dict=upstream.output_dict({}, {}),
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
        maskmem_features = upstream.encode_new_memory(
            self.model,
            current_vision_feats=frame.vision_feats,
            feat_sizes=frame.feat_sizes,
            pred_masks_high_res=high_res_masks,
            object_score_logits=out["object_score_logits"],
            is_mask_from_pts=True,
        )
        entry = MemoryEntry(0, maskmem_features.to(torch.bfloat16), out["obj_ptr"])
        return entry, self._prediction(frame, pred_masks, out["object_score_logits"])

    def step(self, frame: FrameFeatures, state: ObjectState) -> Prediction:
        """Track `state` onto the next frame; the state changes only if this succeeds."""
        return self.step_many(frame, [state])[0]

    def step_many(self, frame: FrameFeatures, states: Sequence[ObjectState]) -> list[Prediction]:
        """Track every state onto the next frame, as `step` would one by one; the states change
        only if the whole call succeeds.

        States with the same memory layout (the same frames in memory, as for objects started
        together) go through upstream's `track_step` in batches of up to `max_batch()`, which is
        how upstream's model batches objects; each object's outputs are its own, as if stepped
        alone.
        """
        groups: dict[tuple, list[int]] = collections.defaultdict(list)
        for index, state in enumerate(states):
            groups[memory_layout(state)].append(index)
        predictions: list[Prediction | None] = [None] * len(states)
        entries: list[MemoryEntry | None] = [None] * len(states)
        size = self.max_batch()
        chunks = [
            indices[start : start + size]
            for indices in groups.values()
            for start in range(0, len(indices), size)
        ]
        with self.session():
            for indices in chunks:
                batch = [states[i] for i in indices]
                outputs = self._step_batch(frame, batch)
                for i, prediction, entry in zip(indices, *outputs, strict=True):
                    predictions[i], entries[i] = prediction, entry
        for state, entry in zip(states, entries, strict=True):
            self._commit(state, entry)
        return predictions

    def max_batch(self) -> int:
        """Objects per batch. A GPU takes all. On the CPU, batches were slower once their
        activations outgrew the caches (`benchmarks/`): past 4 objects per thread at 256 px,
        and at 1024 px (16 times the activations per object) already at 4 objects."""
        if self.device.type == "cpu":
            per_thread = 4 * 256**2 // self.image_size**2
            return max(1, per_thread * torch.get_num_threads())
        return 1 << 30

    def _step_batch(
        self, frame: FrameFeatures, batch: list[ObjectState]
    ) -> tuple[list[Prediction], list[MemoryEntry]]:
        frame_idx = batch[0].frame_idx + 1
        out = self._track_step(
            expanded(frame, len(batch)),
            frame_idx=frame_idx,
            output_dict=batch_output_dict(batch, self._maskmem_pos_enc),
            point_inputs=None,
            mask_inputs=None,
            run_mem_encoder=True,
        )
        pred_masks = self._fill_holes(out["pred_masks"])
        scores = out["object_score_logits"].float().flatten().tolist()  # one host sync
        maskmem = out["maskmem_features"].to(torch.bfloat16)
        predictions, entries = [], []
        for j, score in enumerate(scores):
            predictions.append(Prediction(pred_masks[j : j + 1], score, frame.width, frame.height))
            # Each state owns its tensors (a store serialises them one object at a time).
            features = maskmem[j : j + 1].clone() if len(batch) > 1 else maskmem
            pointer = out["obj_ptr"][j : j + 1]
            entries.append(
                MemoryEntry(frame_idx, features, pointer.clone() if len(batch) > 1 else pointer)
            )
        return predictions, entries

    def _commit(self, state: ObjectState, entry: MemoryEntry) -> None:
        state.recent.append(entry)
        if len(state.recent) > self._memory_frames:
            # Only the newest num_maskmem - 1 frames are read as memory; older ones keep a pointer.
            state.recent[-self._memory_frames - 1].maskmem_features = None
        state.frame_idx = entry.frame_idx

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

    def _memory_pos_enc(self) -> list[torch.Tensor]:
        """The memories' spatial encoding, equal for all frames and objects: one copy, made up
        front, so that a state restored from a store steps without a start in this process.

        The memory encoder computes it from its output's shape alone (a sine encoding of the
        stride-16 feature map, `.to(dtype)` of its output, which autocast makes `self.dtype`).
        """
        size = self.model.sam_image_embedding_size  # image_size // backbone_stride
        with self.session():
            features = torch.zeros(
                1, self.model.mem_dim, size, size, device=self.device, dtype=self.dtype
            )
            encoding = self.model.memory_encoder.position_encoding(features).to(features.dtype)
        return [encoding]

    def restore(
        self,
        frame_idx: int,
        conditioning: Sequence[MemoryEntry],
        recent: Sequence[MemoryEntry],
    ) -> ObjectState:
        """Rebuild an object's state from its entries (each oldest first), as read from a store."""
        return ObjectState(
            frame_idx, tuple(conditioning), collections.deque(recent, maxlen=self.history)
        )

    def _conditioned(
        self, entry: MemoryEntry, earlier: ObjectState | None, distance: int
    ) -> ObjectState:
        """A state whose newest prompted frame is `entry`, `distance` frames past `earlier`'s."""
        if earlier is None:
            return ObjectState(0, (entry,), collections.deque(maxlen=self.history))
        conditioning = prompted_again(earlier, entry, distance, self.max_conditioning_frames)
        frame_idx = conditioning[-1].frame_idx
        return ObjectState(frame_idx, conditioning, collections.deque(maxlen=self.history))

    def _fill_holes(self, pred_masks: torch.Tensor) -> torch.Tensor:
        if self._fill_hole_area > 0:
            return upstream.fill_holes_in_mask_scores(pred_masks, self._fill_hole_area)
        return pred_masks

    @staticmethod
    def _prediction(
        frame: FrameFeatures, pred_masks: torch.Tensor, object_score_logits: torch.Tensor
    ) -> Prediction:
        return Prediction(pred_masks, float(object_score_logits.item()), frame.width, frame.height)
