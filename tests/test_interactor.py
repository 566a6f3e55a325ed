"""The SAM2 interactor, driven as cvat-cli's agent worker drives interaction functions."""

from __future__ import annotations

import cvat_sdk.auto_annotation as cvataa
import pytest
from cvat_cli._internal import agent_driver_interaction as interaction
from cvat_cli._internal.agent_driver import set_worker_current_function
from cvat_sdk.masks import decode_mask

from tracker.cvat.agent.interaction import create
from tracker.devtools.agent_worker import interact, prompts


@pytest.fixture(scope="module")
def function(tiny_checkpoint):
    return create(image_size=256)


@pytest.fixture()
def encodes(function, monkeypatch):
    """Counts image-encoder runs, and installs the function in a fresh agent worker."""
    set_worker_current_function(function)
    interaction.AgentInteractionFunctionDriver.init_worker(None)
    calls = []
    model = function.segmenter.predictor.model
    original = model.forward_image
    monkeypatch.setattr(model, "forward_image", lambda x: calls.append(1) or original(x))
    return calls


@pytest.mark.parametrize(
    "prompt",
    [
        prompts(pos=[(160, 120)]),
        prompts(box=((110, 70), (210, 170))),
        prompts(pos=[(160, 120), (150, 110)], neg=[(20, 20)], box=((110, 70), (210, 170))),
    ],
    ids=["point", "box", "points and box"],
)
def test_prompts_give_one_mask_with_confidence(encodes, video, prompt):
    (shape,) = interact((1, 0, ()), video.image(0), prompt)
    assert shape.type == "mask"
    mask = decode_mask(shape.points, image_width=320, image_height=240)
    assert mask.shape == (240, 320) and mask.any()
    (confidence,) = shape.attributes
    assert confidence.spec_id == cvataa.InteractionResultAttributes.CONFIDENCE
    assert 0.0 <= float(confidence.value) <= 1.0


def test_embedding_is_computed_once_per_image(encodes, video):
    image = video.image(0)
    for click in [(160, 120), (150, 110), (170, 125)]:
        interact((1, 0, ()), image, prompts(pos=[click]))
    assert len(encodes) == 1
    interact((1, 1, ()), video.image(1), prompts(pos=[(160, 120)]))
    assert len(encodes) == 2


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        (prompts(), "at least one point or a box"),
        (prompts(neg=[(20, 20), (300, 200)]), "Negative clicks only .* positive click"),
        (prompts(pos=[(400, 10)]), r"\(400, 10\) is outside the 320x240 image"),
        (prompts(neg=[(-1, 10)], pos=[(5, 5)]), "outside"),
        (prompts(pos=[(float("nan"), 3)]), "NaN"),
        (prompts(box=((50, 50), (50, 90))), "box is empty"),
        (prompts(box=((-90, -90), (-10, -10))), "outside the image"),
    ],
)
def test_bad_prompts_are_explained(encodes, video, prompt, message):
    with pytest.raises(cvataa.BadFunctionError, match=message):
        interact((1, 0, ()), video.image(0), prompt)


def test_embeddings_stay_within_their_budget_and_are_recomputed_when_dropped(video):
    # At 256 px one embedding takes 1 MiB, so a budget of 1 holds one of them.
    function = create(image_size=256, max_embedding_memory_mb=1)
    set_worker_current_function(function)
    interaction.AgentInteractionFunctionDriver.init_worker(None)
    click = prompts(pos=[(160, 120)])
    (first,) = interact((1, 0, ()), video.image(0), click)
    for frame in (1, 2):
        interact((1, frame, ()), video.image(frame), click)
    assert function.budget.total_bytes() == 1024 * 1024
    assert len(function.budget.live_states()) == 1, "the older embeddings were dropped"
    # The agent still holds frame 0's (released) embedding and answers the click from it.
    (again,) = interaction._worker_job_interact_from_cache((1, 0, ()), click)
    assert again.points == first.points


def test_interactor_parameters_are_checked():
    with pytest.raises(cvataa.BadFunctionError, match="max_embedding_memory_mb must be a positive"):
        create(max_embedding_memory_mb=0)
