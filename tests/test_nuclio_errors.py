"""Every bad request to the Nuclio functions gets a 4xx with a message that says what to do;
internal failures a 5xx with a message; no traceback in a body, no exception out of `handler`."""

from __future__ import annotations

import base64
import io
import json

import PIL.Image
import pytest
from nuclio_driver import NuclioFunction, frame_b64

from tracker.cvat import env_options
from tracker.engine.model_loading import ModelConfigError


@pytest.fixture(scope="module")
def functions(tiny_checkpoint):
    with pytest.MonkeyPatch.context() as patch:
        for name in ("CVAT_FUNCTIONS_REDIS_HOST", "CVAT_REDIS_HOST"):
            patch.delenv(name, raising=False)
        patch.setenv("SAM2_IMAGE_SIZE", "256")
        patch.setenv("SAM2_DEVICE", "cpu")
        tracker, interactor = NuclioFunction("tracker"), NuclioFunction("interactor")
        tracker.context, interactor.context  # noqa: B018 - init_context under this environment
    return {"tracker": tracker, "interactor": interactor}


def _png(width: int = 64, height: int = 48) -> str:
    data = io.BytesIO()
    PIL.Image.new("RGB", (width, height), (90, 120, 30)).save(data, format="PNG")
    return base64.b64encode(data.getvalue()).decode()


BOX = [10, 10, 40, 30]
FORGED = "A" * 22  # well-formed, never issued
BAD = {
    "tracker": {
        "no image": ({"shapes": [BOX]}, 400, "no image"),
        "image not base64": ({"image": "%%%", "shapes": [BOX]}, 400, "base64"),
        "image not an image": (
            {"image": base64.b64encode(b"hello").decode(), "shapes": [BOX]},
            400,
            "JPEG or PNG",
        ),
        "nan shape": ({"image": _png(), "shapes": [[10, float("nan"), 40, 30]]}, 400, "NaN"),
        "shape outside image": (
            {"image": _png(), "shapes": [[100, 100, 140, 130]]},
            400,
            "outside",
        ),
        "unknown shape type": (
            {"image": _png(), "shapes": [{"type": "ellipse", "points": [1, 2, 3, 4]}]},
            400,
            "cannot be tracked",
        ),
        "shape of another form": ({"image": _png(), "shapes": [{"x": 1}]}, 400, "must be"),
        "count mismatch": (
            {"image": _png(), "shapes": [BOX, BOX], "states": [None]},
            400,
            "2 shapes but 1 states",
        ),
        "neither shape nor state": (
            {"image": _png(), "shapes": [None], "states": [None]},
            400,
            "neither",
        ),
        "no shapes nor states": ({"image": _png()}, 400, "needs 'shapes'"),
        "unknown handle": ({"image": _png(), "states": [FORGED]}, 404, "run the tracker again"),
        "forged handle": ({"image": _png(), "states": [{"id": 1}]}, 404, "unknown or expired"),
        "shapes not a list": ({"image": _png(), "shapes": "box"}, 400, "must be a list"),
    },
    "interactor": {
        "no image": ({"pos_points": [[5, 5]]}, 400, "no image"),
        "no prompt": ({"image": _png(), "pos_points": [], "neg_points": []}, 400, "point or a box"),
        "point outside": ({"image": _png(), "pos_points": [[500, 5]]}, 400, "outside"),
        "points not pairs": ({"image": _png(), "pos_points": [[1, 2, 3]]}, 400, "[x, y]"),
        "points not numbers": ({"image": _png(), "pos_points": [["a", 2]]}, 400, "numbers"),
        "empty box": ({"image": _png(), "obj_bbox": [[5, 5], [5, 20]]}, 400, "box is empty"),
        "box of another form": ({"image": _png(), "obj_bbox": [[5, 5, 9]]}, 400, "obj_bbox"),
    },
}
CASES = [(kind, name, *case) for kind, cases in BAD.items() for name, case in cases.items()]


@pytest.mark.parametrize(
    ("kind", "name", "body", "status", "fragment"), CASES, ids=[f"{c[0]}: {c[1]}" for c in CASES]
)
def test_bad_requests_are_explained(functions, kind, name, body, status, fragment):
    code, answer = functions[kind].call(body)
    assert code == status, answer
    assert set(answer) == {"message"} and fragment in answer["message"]
    assert "Traceback" not in answer["message"]


@pytest.mark.parametrize("kind", ["tracker", "interactor"])
@pytest.mark.parametrize("body", [b"{not json", "[1, 2]", 42], ids=["bytes", "text", "number"])
def test_bodies_that_are_not_json_objects(functions, kind, body):
    code, answer = functions[kind].call(body, content_type="text/plain")
    assert code == 400 and "JSON" in answer["message"]


def test_json_bytes_bodies_are_read_as_nuclio_may_pass_them(functions, video):
    body = json.dumps({"image": frame_b64(video.frames[0]), "shapes": [BOX]}).encode()
    code, answer = functions["tracker"].call(body)
    assert code == 200 and len(answer["states"]) == 1


def test_internal_failures_are_a_5xx_with_a_message(functions, monkeypatch):
    service = functions["tracker"].context.user_data.service
    monkeypatch.setattr(service.tracker, "encode", lambda image: 1 / 0)
    code, answer = functions["tracker"].call({"image": _png(), "shapes": [BOX]})
    assert code == 500 and "ZeroDivisionError" in answer["message"]
    assert "Traceback" not in answer["message"] and "report" in answer["message"]


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("SAM2_IMAGE_SIZE", "big", "SAM2_IMAGE_SIZE must be a whole number"),
        ("SAM2_IMAGE_SIZE", "100", "multiple of 32"),
        ("SAM2_POLYGON_TOLERANCE", "x", "SAM2_POLYGON_TOLERANCE must be a number"),
        ("SAM2_MAX_STATE_MEMORY_MB", "0", "SAM2_MAX_STATE_MEMORY_MB must be a positive"),
        ("SAM2_DEVICE", "cuda", "is not available"),
        ("SAM2_DTYPE", "int8", "Unknown dtype"),
        ("SAM2_MODEL_ID", "no/such-model", "Unknown SAM2 model"),
        ("SAM2_CONFIG", "sam9_hiera_q", "Unknown SAM2 config"),
    ],
)
def test_environment_parameters_are_checked_as_the_agents_are(variable, value, fragment):
    with pytest.raises(ModelConfigError, match=fragment):
        env_options.tracker_options({variable: value})


def test_interactor_settings_are_checked():
    with pytest.raises(ModelConfigError, match="SAM2_INTERACTOR_ANSWER must be one of"):
        env_options.interactor_settings({"SAM2_INTERACTOR_ANSWER": "polygon"})
    with pytest.raises(ModelConfigError, match="SAM2_MAX_EMBEDDING_MEMORY_MB must be a positive"):
        env_options.interactor_settings({"SAM2_MAX_EMBEDDING_MEMORY_MB": "-1"})


@pytest.mark.parametrize("prefix", ["CVAT_FUNCTIONS_REDIS", "CVAT_REDIS"])
def test_a_bad_redis_port_names_the_variable_it_came_from(prefix):
    with pytest.raises(ModelConfigError, match=f"^{prefix}_PORT must be a port number"):
        env_options.redis_client({f"{prefix}_HOST": "redis", f"{prefix}_PORT": "six"})
