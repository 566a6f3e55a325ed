"""Hostile shapes, odd images, long sessions: a valid answer or a BadFunctionError, nothing else."""

from __future__ import annotations

import gc
import json

import attrs
import cvat_sdk.auto_annotation as cvataa
import numpy as np
import PIL.Image
import pytest
import torch
from cvat_cli._internal import agent_driver_interaction as agent_interaction
from cvat_cli._internal.agent_driver import set_worker_current_function
from cvat_sdk.masks import decode_mask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shape_checks import assert_valid_shape

from tracker.cvat import shapes
from tracker.cvat.agent.interaction import create as create_interactor
from tracker.cvat.agent.tracking import create
from tracker.devtools.agent_worker import AgentWorker

TINY_SIZE = 64  # the real architecture at its smallest input: fast enough for many examples
W, H = 96, 72
PROPERTY = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def function(tiny_checkpoint):
    return create(image_size=TINY_SIZE)


@pytest.fixture()
def worker(function):
    return AgentWorker(function)


@pytest.fixture(scope="module")
def frames(video):
    return [video.image(i).resize((W, H)) for i in range(3)]


def assert_valid(shape, kind: str, width: int, height: int, may_be_lost: bool = False) -> None:
    """What the agent sends back must be valid CVAT data of the original type; nothing (the
    object is lost) only where `may_be_lost`, e.g. for a hostile prompt."""
    if shape is None:
        assert may_be_lost, "tracking returned nothing"
        return
    assert shape.type == kind
    json.dumps(attrs.asdict(shape))
    assert_valid_shape(kind, shape.points, width, height)


def snapshot(function, state_id: str) -> tuple:
    from cvat_cli._internal import agent_driver_tracking as tracking

    state = tracking._tracking_states._id_to_ext_state[state_id].inner_state
    return state.object_state.frame_idx, state.nbytes(), function.budget.total_bytes()


numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**70), 2**70),
    st.floats(-20, 120),
    st.integers(-5, 100),
)
point_lists = st.one_of(
    st.lists(numbers, max_size=24),
    st.builds(lambda value, count: [value] * count, numbers, st.integers(0, 12)),
)


@st.composite
def rle_lists(draw):
    """Valid RLE of random masks (unions of boxes, maybe none), often corrupted in one place."""
    mask = np.zeros((H, W), dtype=bool)
    for x, y, w, h in draw(st.lists(st.tuples(*[st.integers(0, 95)] * 4), max_size=4)):
        mask[y : y + h, x : x + w] = True
    rle = shapes.rle_from_mask(mask)
    if draw(st.booleans()):
        rle[draw(st.integers(0, len(rle) - 1))] = draw(numbers)
    return rle


def _init_any(function, worker, frames, kind, points):
    good = worker.init(frames[0], ("rectangle", [20, 15, 60, 50]))[0]
    before = snapshot(function, good)
    try:
        ids = worker.init(frames[0], (kind, points))
    except cvataa.BadFunctionError as error:
        assert str(error)
        assert snapshot(function, good) == before, "a failed call changed another state"
        return
    (shape,) = worker.track(frames[1], ids)
    assert_valid(shape, kind, W, H, may_be_lost=True)


@PROPERTY
@given(kind=st.sampled_from(["mask", "polygon", "rectangle"]), points=point_lists)
def test_any_point_list(function, worker, frames, kind, points):
    _init_any(function, worker, frames, kind, points)


@PROPERTY
@given(points=rle_lists())
def test_any_rle(function, worker, frames, points):
    _init_any(function, worker, frames, "mask", points)


@PROPERTY
@given(box=st.lists(st.floats(-50, 150), min_size=4, max_size=4))
def test_any_rectangle(function, worker, frames, box):
    _init_any(function, worker, frames, "rectangle", box)


@pytest.fixture(scope="module")
def interaction_function(tiny_checkpoint):
    return create_interactor(image_size=TINY_SIZE)


coordinates = st.tuples(numbers, numbers)


@PROPERTY
@given(
    pos=st.lists(coordinates, max_size=4),
    neg=st.lists(coordinates, max_size=3),
    box=st.one_of(st.none(), st.tuples(coordinates, coordinates)),
)
def test_any_interaction_prompt(interaction_function, frames, pos, neg, box):
    set_worker_current_function(interaction_function)
    agent_interaction.AgentInteractionFunctionDriver.init_worker(None)
    prompts = agent_interaction._InteractionPromptsImpl(
        pos_points=tuple(pos), neg_points=tuple(neg), bounding_box=box
    )
    try:
        result = agent_interaction._worker_job_interact((1, 0, ()), frames[0], prompts)
    except cvataa.BadFunctionError as error:
        assert str(error)
        return
    for shape in result:
        assert shape.type == "mask"
        assert decode_mask(shape.points, image_width=W, image_height=H).any()


def _in_mode(image: PIL.Image.Image, mode: str) -> PIL.Image.Image:
    grey = np.asarray(image.convert("L"))
    if mode == "I;16":
        return PIL.Image.fromarray(grey.astype(np.uint16) * 257)
    if mode == "I":
        return PIL.Image.fromarray(grey.astype(np.int32) * 257)
    if mode == "F":
        return PIL.Image.fromarray(grey.astype(np.float32) / 255)
    return image.convert(mode)


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGBA", "I;16", "I", "F", "CMYK"])
def test_image_modes_track(worker, frames, mode):
    images = [_in_mode(frame, mode) for frame in frames]
    assert images[0].mode == mode
    ids = worker.init(
        images[0], ("rectangle", [20, 15, 60, 50]), ("polygon", [20, 15, 60, 15, 40, 50])
    )
    for shape, kind in zip(worker.track(images[1], ids), ["rectangle", "polygon"], strict=True):
        assert_valid(shape, kind, W, H)


@pytest.mark.parametrize("mode", ["L", "I;16", "I", "F"])
def test_greyscale_tracks_like_its_rgb_copy(worker, frames, mode):
    greys = [_in_mode(frame, mode) for frame in frames]
    rgbs = [frame.convert("L").convert("RGB") for frame in frames]
    prompt = ("mask", shapes.rle_from_mask(np.asarray(frames[0].convert("L")) > 128))
    outputs = []
    for images in (greys, rgbs):
        ids = worker.init(images[0], prompt)
        outputs.append([worker.track(image, ids)[0].points for image in images[1:]])
    assert outputs[0] == outputs[1]


def test_unconvertible_mode_is_explained(function):
    image = PIL.Image.new("La", (8, 8))
    with pytest.raises(cvataa.BadFunctionError, match="'La' cannot be converted to RGB"):
        function.preprocess_image(None, image)


@pytest.mark.parametrize("size", [(1, 1), (3, 2), (4096, 64), (8000, 6000)])
def test_odd_sizes_track(worker, size):
    width, height = size
    rng = np.random.default_rng(0)
    image = PIL.Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    # The triangle's long side lies outside the image: through a 1x1 image's only pixel centre it
    # would leave that pixel out (a centre on an edge is not covered; see test_shapes.py).
    triangle = [0, 0, 2 * width, 0, 0, 2 * height]
    prompts = [("rectangle", [0, 0, width, height]), ("polygon", triangle)]
    ids = worker.init(image, *prompts)
    for shape, (kind, _) in zip(worker.track(image, ids), prompts, strict=True):
        assert_valid(shape, kind, width, height)


def _tensor_bytes() -> int:
    """Bytes of every tensor storage alive in the process. A leak of tracking state shows here at
    its own size, where the process's size moves by allocator pages and caches."""
    gc.collect()
    storages = {}
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor) and obj.device.type != "meta":
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def test_memory_stays_flat_over_a_long_session(request, function, frames):
    """>= 2,000 track calls over 50 live states; `--soak-requests` makes it longer."""
    requests = request.config.getoption("--soak-requests")
    worker = AgentWorker(function)
    ids = worker.init(
        frames[0], *[("rectangle", [10 + i % 40, 10, 50 + i % 40, 60]) for i in range(50)]
    )
    warm_up = 20  # past the 16-frame pointer window, every state is full
    for index in range(warm_up):
        worker.track(frames[index % 3], ids)
    before, state_bytes = _tensor_bytes(), function.budget.total_bytes()
    for index in range(requests):
        worker.track(frames[index % 3], ids)
    growth = _tensor_bytes() - before
    one_state = state_bytes // len(ids)
    assert growth < one_state, f"tensors grew by {growth} bytes; one state is {one_state}"
    assert (warm_up + requests) * len(ids) >= 2000
    assert function.budget.total_bytes() == state_bytes  # the states themselves are full
