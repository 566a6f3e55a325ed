"""Every bad request to the Nuclio functions gets a 4xx with a message that says what to do;
internal failures a 5xx with a message; no traceback in a body, no exception out of `handler`."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import struct
import zlib

import PIL.Image
import pytest
import torch
from nuclio_driver import NuclioFunction, frame_b64

from tracker.cvat import env_options
from tracker.cvat.lambda_protocol.lambda_envelope import RequestError, request_object
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


def _png_claiming(width: int, height: int) -> str:
    """A PNG whose header claims `width` x `height` but holds a 64x48 image's data: decoding it
    would fail, so only a check of the header before decoding names the pixel limit."""
    data = bytearray(base64.b64decode(_png()))
    header = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(header))
    return base64.b64encode(bytes(data)).decode()


def _encoded(format: str) -> str:
    data = io.BytesIO()
    PIL.Image.new("RGB", (64, 48), (90, 120, 30)).save(data, format=format)
    return base64.b64encode(data.getvalue()).decode()


def _nested(depth: int) -> dict:
    inner: list = [1]
    for _ in range(depth):
        inner = [inner]
    return {"image": _png(), "shapes": [BOX], "extra": inner}


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
        "too many objects": (
            {"image": _png(), "shapes": [BOX] * 101},
            400,
            "101 objects, past this function's limit of 100 (SAM2_MAX_OBJECTS",
        ),
        "polygon of too many points": (
            {"image": _png(), "shapes": [{"type": "polygon", "points": [10, 10] * 10_001}]},
            400,
            "10,001 points, past this function's limit of 10,000 (SAM2_MAX_POLYGON_POINTS",
        ),
        "frame of too many pixels": (
            {"image": _png_claiming(12_000, 9_000), "shapes": [BOX]},
            400,
            "12000x9000 (108.0 megapixels), past this function's limit of 100 "
            "(SAM2_MAX_FRAME_MEGAPIXELS",
        ),
        "frame of a format CVAT never sends": (
            {"image": _encoded("PPM"), "shapes": [BOX]},
            400,
            "send a JPEG or PNG frame",
        ),
        "JSON nested too deep": (_nested(40), 400, "nests deeper than 32 levels"),
    },
    "interactor": {
        "no image": ({"pos_points": [[5, 5]]}, 400, "no image"),
        "no prompt": ({"image": _png(), "pos_points": [], "neg_points": []}, 400, "point or a box"),
        "point outside": ({"image": _png(), "pos_points": [[500, 5]]}, 400, "outside"),
        "points not pairs": ({"image": _png(), "pos_points": [[1, 2, 3]]}, 400, "[x, y]"),
        "points not numbers": ({"image": _png(), "pos_points": [["a", 2]]}, 400, "numbers"),
        "empty box": ({"image": _png(), "obj_bbox": [[5, 5], [5, 20]]}, 400, "box is empty"),
        "box of another form": ({"image": _png(), "obj_bbox": [[5, 5, 9]]}, 400, "obj_bbox"),
        "too many clicks": (
            {"image": _png(), "pos_points": [[5, 5]] * 60, "neg_points": [[9, 9]] * 41},
            400,
            "101 clicks, past this function's limit of 100 (SAM2_MAX_CLICKS",
        ),
        "frame of too many pixels": (
            {"image": _png_claiming(12_000, 9_000), "pos_points": [[5, 5]]},
            400,
            "(SAM2_MAX_FRAME_MEGAPIXELS",
        ),
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


@pytest.mark.parametrize("format", ["JPEG", "PNG", "TIFF", "BMP", "WEBP"])
def test_frames_of_the_formats_cvat_sends_are_read(functions, format):
    """An image task's original quality sends the uploaded files as they are."""
    code, answer = functions["tracker"].call({"image": _encoded(format), "shapes": [BOX]})
    assert code == 200, answer


@pytest.mark.parametrize("kind", ["tracker", "interactor"])
@pytest.mark.parametrize("depth", [40, 100_000])
def test_json_nested_too_deep_is_a_400_however_nuclio_passes_it(functions, kind, depth):
    """Nuclio hands the handler a parsed object, or the bytes when its own parser failed (past
    Python's recursion limit); the server always hands bytes."""
    text = json.dumps({"image": _png(), "pos_points": [[5, 5]], "extra": 1})
    text = text.replace('"extra": 1', '"extra": ' + "[" * depth + "]" * depth)
    bodies = [text.encode()] + ([json.loads(text)] if depth < 900 else [])
    for body in bodies:
        code, answer = functions[kind].call(body)
        assert code == 400 and "nests deeper than 32 levels" in answer["message"], answer


def test_the_envelope_refuses_json_nested_too_deep():
    with pytest.raises(RequestError, match="nests deeper than 32 levels"):
        request_object(b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    with pytest.raises(RequestError, match="nests deeper than 32 levels"):
        request_object({"a": _nested(31)["extra"]})
    assert request_object({"a": _nested(29)["extra"]})["a"]


def test_limits_are_settings_of_the_function_and_the_server():
    options = env_options.tracker_options(
        {"SAM2_MAX_OBJECTS": "2", "SAM2_MAX_FRAME_MEGAPIXELS": "5"}
    )
    assert (options.limits.max_objects, options.limits.max_frame_megapixels) == (2, 5)
    settings = env_options.interactor_settings({"SAM2_MAX_CLICKS": "7"})
    assert settings.options.limits.max_clicks == 7
    with pytest.raises(ModelConfigError, match="SAM2_MAX_POLYGON_POINTS must be a whole number"):
        env_options.tracker_options({"SAM2_MAX_POLYGON_POINTS": "0"})
    from tracker.cli.main import _parser
    from tracker.cli.serve import config_from_args

    args = _parser().parse_args(["serve", "--max-objects", "3", "--max-clicks", "4"])
    config = config_from_args(args, {})
    assert config.settings["SAM2_MAX_OBJECTS"] == "3" and config.settings["SAM2_MAX_CLICKS"] == "4"
    assert env_options.tracker_options(config.settings).limits.max_objects == 3


def test_a_lower_limit_refuses_what_the_default_takes(functions, monkeypatch):
    service = functions["tracker"].context.user_data.service
    limits = dataclasses.replace(service.tracker.options.limits, max_objects=2)
    monkeypatch.setattr(
        service.tracker, "options", dataclasses.replace(service.tracker.options, limits=limits)
    )
    assert functions["tracker"].call({"image": _png(), "shapes": [BOX] * 2})[0] == 200
    code, answer = functions["tracker"].call({"image": _png(), "shapes": [BOX] * 3})
    assert code == 400 and "limit of 2 (SAM2_MAX_OBJECTS" in answer["message"]


def test_json_bytes_bodies_are_read_as_nuclio_may_pass_them(functions, video):
    body = json.dumps({"image": frame_b64(video.frames[0]), "shapes": [BOX]}).encode()
    code, answer = functions["tracker"].call(body)
    assert code == 200 and len(answer["states"]) == 1


def _out_of_memory(*args, **kwargs):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


@pytest.mark.parametrize(
    ("kind", "where", "fragment"),
    [
        ("tracker", "encode", "while encoding a frame: lower SAM2_IMAGE_SIZE=512"),
        ("tracker", "step", "while tracking: track fewer objects at once"),
        ("interactor", "embed", "while encoding an image: lower SAM2_IMAGE_SIZE=512"),
    ],
)
def test_out_of_memory_is_a_503_with_advice_for_what_ran_out(
    functions, video, monkeypatch, kind, where, fragment
):
    """The operator's to fix (or a moment's wait): 503, never the 400 of a user's mistake; and
    the advice fits what ran out, a frame's encoding or the objects' steps."""
    service = functions[kind].context.user_data.service
    if kind == "tracker":
        started = functions[kind].call({"image": frame_b64(video.frames[0]), "shapes": [BOX]})
        body = {"image": frame_b64(video.frames[1]), "states": started[1]["states"]}
        target = service.tracker.engine if where == "encode" else service.tracker
        monkeypatch.setattr(target, "encode" if where == "encode" else "step_many", _out_of_memory)
    else:
        body = {"image": _png(61, 47), "pos_points": [[5, 5]]}  # a frame not cached yet
        monkeypatch.setattr(service.function.segmenter, "embed", _out_of_memory)
    code, answer = functions[kind].call(body)
    assert code == 503 and fragment in answer["message"], answer


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


def test_a_bad_redis_port_names_its_variable():
    with pytest.raises(ModelConfigError, match="^CVAT_FUNCTIONS_REDIS_PORT must be a port number"):
        env_options.redis_client(
            {"CVAT_FUNCTIONS_REDIS_HOST": "redis", "CVAT_FUNCTIONS_REDIS_PORT": "six"}
        )


def test_cvats_job_queue_redis_is_never_used_for_states(caplog):
    """CVAT_REDIS_* is CVAT's in-memory job-queue Redis (issue 25 item 6): states stay out of it,
    and the log says why and which variables to set."""
    queue_redis = {"CVAT_REDIS_HOST": "cvat_redis_inmem", "CVAT_REDIS_PORT": "6379"}
    with caplog.at_level("WARNING"):
        assert env_options.redis_client(queue_redis) is None
    assert "CVAT_FUNCTIONS_REDIS_HOST" in caplog.text and "job-queue" in caplog.text
    both = {**queue_redis, "CVAT_FUNCTIONS_REDIS_HOST": "cvat_redis_ondisk"}
    both["CVAT_FUNCTIONS_REDIS_PORT"] = "6666"
    assert env_options.redis_client(both)[1] == "cvat_redis_ondisk:6666"
