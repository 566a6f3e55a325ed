"""The systems the benchmark times, each driven frame by frame the way its users drive it.

Every `step()` returns the wall time of one frame, all of it counted: decoding and preprocessing
the source frame, the image encoder, every object's step and (for ours) the CVAT shapes.
Upstream loads all frames up front in `init_state`; its loading time is shared out per frame.
"""

from __future__ import annotations

import time


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _mask_prompts(video, count: int):
    """`count` objects on frame 0: the true mask shifted sideways, so objects differ."""
    import numpy as np

    return [np.roll(video.masks[0], 24 * k, axis=1) for k in range(count)]


class OursAgent:
    """Our function as cvat-cli's agent drives it: one `track` call per shape, one at a time."""

    def __init__(self, function, video, count: int, device) -> None:
        from tracker.cvat import shapes
        from tracker.devtools.agent_worker import AgentWorker

        self.video, self.device = video, device
        self.worker = AgentWorker(function)
        prompts = [("mask", shapes.rle_from_mask(m)) for m in _mask_prompts(video, count)]
        self.ids = self.worker.init(video.image(0), *prompts)
        self.frame_idx = 0

    def step(self) -> float:
        self.frame_idx += 1
        image = self.video.image(self.frame_idx)  # opened lazily: decoding is counted
        start = time.perf_counter()
        self.worker.track(image, self.ids)
        sync(self.device)
        return time.perf_counter() - start

    def state_bytes(self) -> int:
        from cvat_cli._internal import agent_driver_tracking

        container = agent_driver_tracking._tracking_states._id_to_ext_state
        return container[self.ids[0]].inner_state.object_state.nbytes()


class OursBatched:
    """All shapes of a frame in one request (`ShapeTracker.step_many`), as a server gets them;
    `single=True`: each shape stepped on its own (`ShapeTracker.step`), no batches at all."""

    def __init__(self, function, video, count: int, device, single: bool = False) -> None:
        from tracker.cvat import shapes
        from tracker.cvat.shape_tracker import Shape

        self.video, self.device, self.tracker = video, device, function.tracker
        frame = self.tracker.encode(video.image(0))
        self.objects = [
            self.tracker.start(frame, Shape("mask", shapes.rle_from_mask(m)))
            for m in _mask_prompts(video, count)
        ]
        self.frame_idx, self.single = 0, single

    def step(self) -> float:
        self.frame_idx += 1
        image = self.video.image(self.frame_idx)
        start = time.perf_counter()
        with self.tracker.engine.session():
            frame = self.tracker.encode(image)
            if self.single:
                for obj in self.objects:
                    self.tracker.step(frame, obj)
            else:
                self.tracker.step_many(frame, self.objects)
        sync(self.device)
        return time.perf_counter() - start


class Upstream:
    """`init_state` + `add_new_mask` + `propagate_in_video`, as upstream's notebooks run it."""

    def __init__(self, model, video, count: int, frames: int, device) -> None:
        import sam2.sam2_video_predictor as predictor
        import torch

        from tracker.engine.model_loading import resolve_dtype

        dtype = resolve_dtype("auto", device)
        if device.type == "cuda":  # as upstream's notebooks set it on Ampere and newer GPUs
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        self.autocast = lambda: torch.autocast(
            device.type, dtype=dtype, enabled=dtype != torch.float32
        )
        self.device = device
        loading = [0.0]
        original = predictor.load_video_frames

        def timed_loading(*args, **kwargs):
            start = time.perf_counter()
            result = original(*args, **kwargs)
            loading[0] += time.perf_counter() - start
            return result

        predictor.load_video_frames = timed_loading
        try:
            with self.autocast():
                self.state = model.init_state(str(video.folder), offload_video_to_cpu=True)
        finally:
            predictor.load_video_frames = original
        self.loading_per_frame = loading[0] / self.state["num_frames"]
        with self.autocast():
            for obj_id, mask in enumerate(_mask_prompts(video, count)):
                model.add_new_mask(self.state, frame_idx=0, obj_id=obj_id, mask=mask)
            self.frames = model.propagate_in_video(self.state, max_frame_num_to_track=frames - 1)
            next(self.frames)  # the prompt frame
        self.frame_idx = 0

    def step(self) -> float:
        start = time.perf_counter()
        with self.autocast():
            self.frame_idx, _, _ = next(self.frames)
        sync(self.device)
        return time.perf_counter() - start + self.loading_per_frame

    def state_bytes(self) -> int:
        output = self.state["output_dict_per_obj"][0]
        return tensor_bytes(output)


def tensor_bytes(value) -> int:
    """Bytes of the distinct tensors in nested dicts, lists and tuples."""
    import torch

    def walk(value):
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, dict | list | tuple):
            for item in value.values() if isinstance(value, dict) else value:
                yield from walk(item)

    unique = {t.data_ptr(): t for t in walk(value)}  # shared tensors count once
    return sum(t.numel() * t.element_size() for t in unique.values())


def cvat_state_bytes(engine, video) -> int:
    """What CVAT's `func.py` keeps per object, measured on a real step: 1 conditioning + 7
    memory frames, each its own copy of `track_step`'s maskmem features, their positional
    encoding, the low-res mask and the object pointer."""
    frame = engine.encode(video.image(0))
    state, _ = engine.start_from_mask(frame, video.masks[0])
    kept = ("maskmem_features", "maskmem_pos_enc", "pred_masks", "obj_ptr")
    outputs = []
    original = engine.model.track_step

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        outputs.append({key: out[key] for key in kept})
        return out

    engine.model.track_step = recording
    try:
        engine.step(engine.encode(video.image(1)), state)
    finally:
        del engine.model.track_step
    return 8 * tensor_bytes(outputs[0])


def encoder_seconds(engine, model, video, device, repeats: int = 3) -> dict[str, float]:
    """Per frame, best of `repeats`: ours `encode` (from the source frame: decoding and
    preprocessing included) and upstream's loader steps for one frame plus `forward_image`."""
    import torch
    from sam2.utils.misc import _load_img_as_tensor

    from tracker.engine.frames import IMAGE_MEAN, IMAGE_STD

    def upstream_encode(index: int) -> None:
        pixels, _, _ = _load_img_as_tensor(str(video.frames[index]), engine.image_size)
        pixels = (pixels.to(torch.float32) - IMAGE_MEAN) / IMAGE_STD
        with engine.session():  # upstream's own autocast around its whole propagation
            model.forward_image(pixels.to(device)[None])

    systems = {"ours": lambda i: engine.encode(video.image(i)), "upstream": upstream_encode}
    best = {name: float("inf") for name in systems}
    for index in range(repeats + 1):
        for name, run in systems.items():  # in turns
            sync(device)
            start = time.perf_counter()
            run(index)
            sync(device)
            if index:  # the first round warms up
                best[name] = min(best[name], time.perf_counter() - start)
    return best
