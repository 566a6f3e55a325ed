"""The CVAT tracking function, driven as the agent's worker drives it."""

from __future__ import annotations

import json

import attrs
import cvat_sdk.auto_annotation as cvataa
import pytest
import torch
from cvat_sdk.masks import decode_mask
from sam2_runs import iou
from shape_checks import assert_valid_shape, largest_region_filled

from tracker.cvat import shapes
from tracker.cvat.agent.tracking import create
from tracker.devtools.agent_worker import AgentWorker
from tracker.engine.streaming import Prediction

FRAMES = 11  # the prompt frame and 10 tracked frames


@pytest.fixture(scope="module")
def function(tiny_checkpoint):
    return create(image_size=256)


@pytest.fixture()
def worker(function):
    return AgentWorker(function)


def _prompts(video):
    mask = video.masks[0]
    polygon = shapes.polygon_from_mask(mask, tolerance=0.5)
    x1, y1, x2, y2 = shapes.rectangle_from_mask(mask)
    return [
        ("mask", shapes.rle_from_mask(mask)),
        ("polygon", polygon),
        ("rectangle", [x1 - 3, y1 - 3, x2 + 3, y2 + 3]),
    ]


def _reference_masks(engine, video, prompts):
    """The engine's own masks for each prompt, frame by frame, with no CVAT layer between."""
    width, height = video.image(0).size
    frame = engine.encode(video.image(0))
    starts = {
        "mask": lambda p: engine.start_from_mask(frame, shapes.mask_from_rle(p, width, height)),
        "polygon": lambda p: engine.start_from_mask(
            frame, shapes.mask_from_polygon(p, width, height)
        ),
        "rectangle": lambda p: engine.start_from_box(
            frame, shapes.box_from_rectangle(p, width, height)
        ),
    }
    states = [starts[kind](points)[0] for kind, points in prompts]
    per_frame = []
    for index in range(1, FRAMES):
        frame = engine.encode(video.image(index))
        per_frame.append([engine.step(frame, state).mask() for state in states])
    return per_frame


def _count_encodes(function, monkeypatch) -> list:
    calls = []
    original = function.engine.encode
    monkeypatch.setattr(function.engine, "encode", lambda image: calls.append(1) or original(image))
    return calls


def test_mask_polygon_and_rectangle_tracked_together(function, worker, video, monkeypatch):
    prompts = _prompts(video)
    expected = _reference_masks(function.engine, video, prompts)
    encodes = _count_encodes(function, monkeypatch)
    state_ids = worker.init(video.image(0), *prompts)
    assert len(state_ids) == 3 and len(encodes) == 1
    width, height = video.image(0).size
    for index in range(1, FRAMES):
        tracked = worker.track(video.image(index), state_ids)
        assert len(encodes) == index + 1, "one preprocess_image per request, shared by all shapes"
        for (kind, _), shape, reference in zip(prompts, tracked, expected[index - 1], strict=True):
            assert shape is not None and shape.type == kind
            json.dumps(attrs.asdict(shape))  # the agent sends this as JSON
            assert_valid_shape(kind, shape.points, width, height)
            # The agent steps the three objects as one batch, the reference one by one: float
            # rounding may move a pixel at an edge, so the promise is IoU >= 0.999, not bits.
            if kind == "mask":
                decoded = decode_mask(shape.points, image_width=width, image_height=height)
                assert iou(decoded, reference) >= 0.999
            elif kind == "polygon":
                # A polygon is one ring: with random weights SAM2's masks are striped, so it is
                # compared with the mask's largest region, holes filled (see test_shapes.py for
                # whole masks of real-looking objects).
                drawn = shapes.mask_from_polygon(shape.points, width, height)
                assert iou(drawn, largest_region_filled(reference)) >= 0.95
            else:
                drawn = shapes.mask_from_rectangle(shape.points, width, height)
                box = shapes.mask_from_rectangle(
                    shapes.rectangle_from_mask(reference), width, height
                )
                assert iou(drawn, box) >= 0.99  # a moved edge pixel moves a side by one


BAD_SHAPES = {
    "rle too short": ("mask", [1, 2, 3]),
    "rle box of zeros": ("mask", [4, 300, 200, 301, 201]),  # a 2x2 box inside, nothing set
    "rle box outside image": ("mask", [0, 4, 400, 300, 401, 301]),
    "rle box past the border": ("mask", [0, 4, 318, 238, 321, 241]),
    "rle runs do not fill box": ("mask", [1, 2, 0, 0, 9, 9]),
    "rle negative run": ("mask", [-5, 9, 0, 0, 1, 1]),
    "rle not integers": ("mask", [1.5, 2.5, 0, 0, 1, 1]),
    "rle nan": ("mask", [float("nan"), 4, 0, 0, 1, 1]),
    "rle huge run": ("mask", [10**15, 0, 0, 0, 0]),
    "empty mask": ("mask", [4, 0, 0, 1, 1]),
    "polygon two points": ("polygon", [10, 10, 50, 50, 10, 10]),
    "polygon nan": ("polygon", [10, 10, 50, float("nan"), 30, 60]),
    "polygon inf": ("polygon", [10, 10, 50, float("inf"), 30, 60]),
    "polygon odd": ("polygon", [10, 10, 50, 50, 30]),
    "polygon outside image": ("polygon", [400, 10, 500, 10, 450, 100]),
    "rectangle zero area": ("rectangle", [10, 10, 10, 50]),
    "rectangle outside image": ("rectangle", [-50, -50, -10, -10]),
    "rectangle three numbers": ("rectangle", [10, 10, 50]),
    "rectangle nan": ("rectangle", [10, 10, float("nan"), 50]),
}


@pytest.mark.parametrize("shape", BAD_SHAPES.values(), ids=BAD_SHAPES.keys())
def test_bad_shape_is_a_bad_function_error_and_others_keep_tracking(worker, video, shape):
    good = worker.init(video.image(0), ("mask", shapes.rle_from_mask(video.masks[0])))
    with pytest.raises(cvataa.BadFunctionError) as error:
        worker.init(video.image(1), shape)
    message = str(error.value)
    assert "redraw" in message or "draw" in message or "paint" in message
    (tracked,) = worker.track(video.image(1), good)
    assert tracked is not None and tracked.type == "mask"


def test_lost_object_is_none(function):
    logits = torch.full((1, 1, 64, 64), 5.0)
    assert function.tracker.shape(Prediction(logits, -0.5, 320, 240), "mask") is None
    assert function.tracker.shape(Prediction(-logits, 3.0, 320, 240), "polygon") is None
    shape = function.tracker.shape(Prediction(logits, 3.0, 320, 240), "rectangle")
    assert shape.points == [0.0, 0.0, 320.0, 240.0]


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"image_size": "256"}, "-p image_size=int:256"),
        ({"image_size": 250}, "multiple of 32"),
        ({"polygon_tolerance": -1.0}, "polygon_tolerance"),
        ({"max_state_memory_mb": 0}, "max_state_memory_mb"),
        ({"no_such_option": 1}, "Unknown parameter(s) no_such_option"),
    ],
)
def test_bad_parameters_are_explained(params, fragment):
    with pytest.raises(
        cvataa.BadFunctionError, match=fragment.replace("(", r"\(").replace(")", r"\)")
    ):
        create(**params)
