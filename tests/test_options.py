"""Parameters are named in the syntax of the interface that raised the message."""

from __future__ import annotations

import pytest

from tracker.cvat.options import Syntax, TrackerOptions
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
    assert syntax.phrase(Parameter("max_state_memory_mb", 256)) in user_message(error.value, syntax)
