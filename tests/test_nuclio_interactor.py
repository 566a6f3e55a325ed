"""The Nuclio interactor: the agent interactor's masks in CVAT's answer forms, one encoder pass per
frame however many clicks."""

from __future__ import annotations

import numpy as np
import pytest
from cvat_sdk.masks import decode_mask
from nuclio_driver import NuclioFunction, frame_b64

from tracker.cvat.agent.interaction import create
from tracker.devtools.agent_worker import interact, prompts

PROMPTS = {
    "clicks": {"pos_points": [[160, 120], [150, 110]], "neg_points": [[20, 20]], "obj_bbox": None},
    "box": {"pos_points": [], "neg_points": [], "obj_bbox": [[110, 70], [210, 170]]},
    "both": {"pos_points": [[160, 120]], "neg_points": [], "obj_bbox": [[110, 70], [210, 170]]},
}


@pytest.fixture()
def environment(monkeypatch, tiny_checkpoint):
    monkeypatch.setenv("SAM2_IMAGE_SIZE", "256")
    monkeypatch.setenv("SAM2_DEVICE", "cpu")
    return monkeypatch


def _agent_prompt(body):
    box = body["obj_bbox"]
    return prompts(
        pos=[tuple(p) for p in body["pos_points"]],
        neg=[tuple(p) for p in body["neg_points"]],
        box=None if box is None else (tuple(box[0]), tuple(box[1])),
    )


def _encoder_calls(function: NuclioFunction, monkeypatch) -> list:
    model = function.context.user_data.service.function.segmenter.predictor.model
    calls, original = [], model.forward_image
    monkeypatch.setattr(model, "forward_image", lambda x: calls.append(1) or original(x))
    return calls


@pytest.mark.parametrize("name", PROMPTS)
def test_same_mask_as_the_agent_interactor(environment, video, name):
    from cvat_cli._internal import agent_driver_interaction as agent
    from cvat_cli._internal.agent_driver import set_worker_current_function

    set_worker_current_function(create(image_size=256, device="cpu"))
    agent.AgentInteractionFunctionDriver.init_worker(None)
    (expected,) = interact((1, 0, ()), video.image(0), _agent_prompt(PROMPTS[name]))

    status, answer = NuclioFunction("interactor").call(
        {"image": frame_b64(video.frames[0]), **PROMPTS[name]}
    )
    assert status == 200
    (shape,) = answer["shapes"]
    assert shape["type"] == "mask" and shape["points"] == expected.points
    (confidence,) = shape["attributes"]
    assert confidence == {"spec_id": 0, "value": expected.attributes[0].value}


def test_further_clicks_on_a_frame_run_no_encoder(environment, video, monkeypatch):
    function = NuclioFunction("interactor")
    calls = _encoder_calls(function, monkeypatch)
    image = frame_b64(video.frames[0])
    for click in ([160, 120], [150, 110], [170, 125]):
        status, _ = function.call({"image": image, "pos_points": [click], "neg_points": []})
        assert status == 200
    assert len(calls) == 1
    function.call({"image": frame_b64(video.frames[1]), "pos_points": [[160, 120]]})
    assert len(calls) == 2


def test_embedding_cache_is_bounded_in_bytes(environment, video, monkeypatch):
    environment.setenv("SAM2_MAX_EMBEDDING_MEMORY_MB", "2")  # one embedding and its frame
    function = NuclioFunction("interactor")
    calls = _encoder_calls(function, monkeypatch)
    cache = function.context.user_data.service.cache
    for index in (0, 1, 0):
        body = {"image": frame_b64(video.frames[index]), "pos_points": [[160, 120]]}
        assert function.call(body)[0] == 200
        assert len(cache) == 1 and cache.total_bytes() <= 2 * 1024 * 1024
    assert len(calls) == 3, "frame 0 was evicted by frame 1, so it is encoded again"


def test_legacy_answer_is_a_frame_sized_mask(environment, video):
    body = {"image": frame_b64(video.frames[0]), **PROMPTS["both"]}
    status, shapes_answer = NuclioFunction("interactor").call(body)
    environment.setenv("SAM2_INTERACTOR_ANSWER", "mask")
    status, mask_answer = NuclioFunction("interactor").call(body)
    assert status == 200 and set(mask_answer) == {"mask"}
    mask = np.array(mask_answer["mask"], dtype=np.uint8)
    assert mask.shape == (240, 320) and set(np.unique(mask)) <= {0, 1}
    expected = decode_mask(shapes_answer["shapes"][0]["points"], image_width=320, image_height=240)
    assert np.array_equal(mask.astype(bool), expected)
