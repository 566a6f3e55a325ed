"""Parameters are named in the syntax of the interface that raised the message."""

from __future__ import annotations

import pytest

from tracker.cvat.options import DEFAULT_MAX_STATE_MEMORY_MB, Syntax, TrackerOptions
from tracker.cvat.user_errors import user_message
from tracker.engine.errors import ModelConfigError, Parameter


@pytest.mark.parametrize(
    ("syntax", "named", "with_value"),
    [
        (Syntax.AGENT, "image_size", "-p image_size=int:256"),
        (Syntax.CLI, "--image-size", "--image-size 256"),
        (Syntax.ENV, "SAM2_IMAGE_SIZE", "SAM2_IMAGE_SIZE=256"),
    ],
)
def test_each_syntax_phrases_a_parameter_its_own_way(syntax, named, with_value):
    assert syntax.phrase(Parameter("image_size")) == named
    assert syntax.phrase(Parameter("image_size", 256)) == with_value


@pytest.mark.parametrize(
    ("syntax", "expected"),
    [
        (Syntax.AGENT, "Use -p device=str:cpu"),
        (Syntax.CLI, "Use --device cpu"),
        (Syntax.ENV, "Use SAM2_DEVICE=cpu"),
    ],
)
def test_engine_errors_are_rendered_by_the_adapter(syntax, expected):
    error = ModelConfigError("Use ", Parameter("device", "cpu"), ", or install a driver.")
    assert user_message(error, syntax) == expected + ", or install a driver."
    assert str(error) == "Use device=cpu, or install a driver."  # neutral where none is known


@pytest.mark.parametrize("syntax", list(Syntax))
def test_option_errors_carry_parameters_not_one_syntax(syntax):
    with pytest.raises(ModelConfigError) as error:
        TrackerOptions.from_params({"image_size": 250}, syntax=syntax)
    message = user_message(error.value, syntax)
    assert message.startswith(syntax.phrase(Parameter("image_size")) + " must be a multiple")
    with pytest.raises(ModelConfigError) as error:
        TrackerOptions.from_params({"max_state_memory_mb": "many"}, syntax=syntax)
    example = Parameter("max_state_memory_mb", DEFAULT_MAX_STATE_MEMORY_MB)  # its default
    assert syntax.phrase(example) in user_message(error.value, syntax)


def test_threads_are_a_parameter_of_every_interface(tiny_checkpoint, monkeypatch):
    """`-p threads=int:1`, `--threads 1`, `SAM2_THREADS=1`: PyTorch's CPU threads."""
    import torch

    from tracker.cli.main import _parser
    from tracker.cli.serve import config_from_args
    from tracker.cvat import env_options
    from tracker.cvat.agent.tracking import create

    assert env_options.tracker_options({"SAM2_THREADS": "3"}).model.threads == 3
    assert _parser().parse_args(["track", "v", "--out", "o", "--threads", "2"]).threads == 2
    serve_args = _parser().parse_args(["serve", "--threads", "2"])
    assert config_from_args(serve_args, {}).settings["SAM2_THREADS"] == "2"
    with pytest.raises(ModelConfigError, match="SAM2_THREADS must be a whole number of at least"):
        env_options.tracker_options({"SAM2_THREADS": "0"})
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        function = create(image_size=256, threads=1)
        function.engine  # noqa: B018 - loading applies the threads
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("cores", "omp", "expected"), [(64, None, 8), (3, None, 3), (1, None, 1), (64, "4", None)]
)
def test_default_threads_are_the_cores_this_process_may_use_capped(
    monkeypatch, cores, omp, expected
):
    import os

    from tracker.cvat import options

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    assert options.default_threads() == expected


def test_max_conditioning_frames_is_a_parameter_of_every_interface(tiny_checkpoint):
    """`-p max_conditioning_frames=int:2`, `--max-conditioning-frames 2` (track and serve) and
    `SAM2_MAX_CONDITIONING_FRAMES=2` all reach `TrackerOptions`, default 4 (issue 26)."""
    from tracker.cli.main import _parser
    from tracker.cli.serve import config_from_args
    from tracker.cvat import env_options
    from tracker.cvat.agent.tracking import Sam2TrackingFunction

    assert TrackerOptions.from_params({}).max_conditioning_frames == 4
    agent = Sam2TrackingFunction.from_params({"max_conditioning_frames": 2})
    assert agent.options.max_conditioning_frames == 2
    assert agent.tracker.options.max_conditioning_frames == 2
    environ = {"SAM2_MAX_CONDITIONING_FRAMES": "3"}
    assert env_options.tracker_options(environ).max_conditioning_frames == 3
    track = _parser().parse_args(["track", "v", "--out", "o", "--max-conditioning-frames", "2"])
    assert track.max_conditioning_frames == 2
    serve_args = _parser().parse_args(["serve", "--max-conditioning-frames", "5"])
    settings = config_from_args(serve_args, {}).settings
    assert settings["SAM2_MAX_CONDITIONING_FRAMES"] == "5"
    assert env_options.tracker_options(settings).max_conditioning_frames == 5


def _refusal(interface: str, value: object) -> str:
    """The message each interface gives for `max_conditioning_frames` set to `value`."""
    import cvat_sdk.auto_annotation as cvataa

    from tracker.cli.main import _parser
    from tracker.cli.serve import config_from_args, phrased_for_serve
    from tracker.cvat import env_options
    from tracker.cvat.agent.tracking import Sam2TrackingFunction
    from tracker.serve import server

    if interface in ("agent", "track"):
        syntax = Syntax.AGENT if interface == "agent" else Syntax.CLI
        with pytest.raises(cvataa.BadFunctionError) as error:
            Sam2TrackingFunction.from_params({"max_conditioning_frames": value}, syntax)
        return str(error.value)
    if interface == "env":
        with pytest.raises(ModelConfigError) as error:
            env_options.tracker_options({"SAM2_MAX_CONDITIONING_FRAMES": str(value)})
        return str(error.value)
    args = _parser().parse_args(["serve", "--insecure", "--max-conditioning-frames", str(value)])
    with pytest.raises(ModelConfigError) as error:
        server.check(config_from_args(args, {}))
    return phrased_for_serve(error.value, args)


@pytest.mark.parametrize(
    ("interface", "named"),
    [
        ("agent", "max_conditioning_frames"),
        ("track", "--max-conditioning-frames"),
        ("env", "SAM2_MAX_CONDITIONING_FRAMES"),
        ("serve", "--max-conditioning-frames"),
    ],
)
@pytest.mark.parametrize("value", [0, 17])
def test_max_conditioning_frames_out_of_bounds_is_refused_in_each_syntax(
    tiny_checkpoint, interface, named, value
):
    message = _refusal(interface, value)
    assert message == f"{named} must be a whole number from 1 to 16; got {value}.", message


@pytest.mark.parametrize(
    ("interface", "fragment"),
    [
        ("agent", "pass it as, for example, -p max_conditioning_frames=int:4"),
        ("env", "SAM2_MAX_CONDITIONING_FRAMES must be a whole number; got 'many'"),
        ("serve", "--max-conditioning-frames must be a whole number; got 'many'"),
    ],
)
def test_max_conditioning_frames_not_a_number_is_refused_in_each_syntax(
    tiny_checkpoint, interface, fragment
):
    assert fragment in _refusal(interface, "many")
