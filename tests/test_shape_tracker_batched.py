"""ShapeTracker.step_many and the cropped result path give what step and whole masks give."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cvat_sdk.masks import decode_mask
from sam2_runs import iou

from tracker.cvat import shapes
from tracker.cvat.agent.tracking import create
from tracker.cvat.shape_tracker import Shape
from tracker.engine.frames import FrameError
from tracker.engine.results import Prediction


@pytest.fixture(scope="module")
def tracker(tiny_checkpoint):
    return create(image_size=256).tracker


def _prompts(video):
    mask = video.masks[0]
    x1, y1, x2, y2 = shapes.rectangle_from_mask(mask)
    return [
        Shape("mask", shapes.rle_from_mask(mask)),
        Shape("polygon", shapes.polygon_from_mask(mask, tolerance=0.5)),
        Shape("rectangle", [x1 - 3, y1 - 3, x2 + 3, y2 + 3]),
    ]


def _drawn(shape, width, height):
    if shape.type == "mask":
        return decode_mask(shape.points, image_width=width, image_height=height)
    if shape.type == "polygon":
        return shapes.mask_from_polygon(shape.points, width, height)
    return shapes.mask_from_polygon(
        [shape.points[i] for i in (0, 1, 2, 1, 2, 3, 0, 3)], width, height
    )


def test_step_many_gives_the_shapes_of_step(tracker, video):
    width, height = video.image(0).size
    first = tracker.encode(video.image(0))
    alone = [tracker.start(first, shape) for shape in _prompts(video)]
    together = [tracker.start(first, shape) for shape in _prompts(video)]
    for index in range(1, 6):
        frame = tracker.encode(video.image(index))
        expected = [tracker.step(frame, obj) for obj in alone]
        got = tracker.step_many(frame, together)
        for a, b, obj in zip(expected, got, together, strict=True):
            assert a is not None and b is not None and a.type == b.type
            assert iou(_drawn(a, width, height), _drawn(b, width, height)) >= 0.999
            assert obj.last_shape is b
    assert [obj.object_state.frame_idx for obj in together] == [5, 5, 5]


def test_step_many_checks_every_frame_size_before_stepping(tracker, video):
    first = tracker.encode(video.image(0))
    objects = [tracker.start(first, shape) for shape in _prompts(video)[:2]]
    objects[1].width += 1  # as if started on a frame of another size
    with pytest.raises(FrameError, match="track within frames of one size"):
        tracker.step_many(tracker.encode(video.image(1)), objects)
    assert objects[0].object_state.frame_idx == 0


@pytest.mark.parametrize("size", [(1920, 1080), (320, 240), (50, 30)])
@pytest.mark.parametrize("kind", ["mask", "polygon", "rectangle"])
def test_shapes_from_crops_equal_shapes_from_whole_masks(tracker, size, kind):
    width, height = size
    generator = torch.Generator().manual_seed(1)
    for trial in range(12):
        logits = torch.randn(1, 1, 64, 64, generator=generator) - 1.0 - trial / 6
        logits[..., 10:20, 30:45] += 3.0
        if trial % 4 == 0:
            logits[..., -2:, :3] = 2.0  # a region in a corner
        prediction = Prediction(logits, 1.0, width, height)
        shape = tracker.shape(prediction, kind)
        whole = prediction.mask()
        if not whole.any():
            assert shape is None
            continue
        if kind == "mask":
            expected = shapes.rle_from_mask(whole)
        elif kind == "polygon":
            expected = shapes.polygon_from_mask(whole, tracker.options.polygon_tolerance)
        else:
            expected = shapes.rectangle_from_mask(whole)
        assert shape == Shape(kind, expected)


def test_one_pixel_thin_region_at_a_crop_edge_is_outlined_as_on_the_whole_mask():
    whole = np.zeros((20, 30), dtype=bool)
    whole[5, 7:12] = True
    expected = shapes.polygon_from_mask(whole, 1.0)
    crop = whole[5:6, 7:12]
    assert shapes.polygon_from_mask(crop, 1.0, 7, 5) == expected


def test_results_are_copied_to_the_host_in_one_transfer(monkeypatch):
    from tracker.engine import results

    logits = [torch.randn(1, 1, 8, 8) for _ in range(3)]
    predictions = [Prediction(x, 1.0, 32, 32) for x in logits]
    assert results.on_host(predictions) is predictions  # already there: nothing to do

    class FakeDevice:  # a stand-in for logits on a GPU: where they are, and one copy back
        type = "cuda"

    copies = []
    original_cat = torch.cat

    class OnDevice(torch.Tensor):
        @property
        def device(self):
            return FakeDevice()

    def counting_cat(tensors, *args, **kwargs):
        copies.append(len(tensors))
        return original_cat([t.as_subclass(torch.Tensor) for t in tensors], *args, **kwargs)

    monkeypatch.setattr(results.torch, "cat", counting_cat)
    remote = [Prediction(x.as_subclass(OnDevice), 1.0, 32, 32) for x in logits]
    host = results.on_host(remote)
    assert copies == [3]
    for before, after in zip(logits, host, strict=True):
        assert torch.equal(after.low_res_logits, before)
        assert after.low_res_logits.shape == (1, 1, 8, 8)
