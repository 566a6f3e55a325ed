"""Turn the errors a user can fix into `BadFunctionError`, the only kind cvat-cli shows them.

Any other exception reaches the user as "Unknown error", so every layer below raises its own
`ValueError` subclass with a message that says what to do, and the CVAT-facing functions wrap
their work in `reported_to_user()`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import cvat_sdk.auto_annotation as cvataa

from tracker.cvat.shapes import ShapeError
from tracker.engine.frames import FrameError
from tracker.engine.image_prompts import PromptError
from tracker.engine.model_loading import ModelConfigError

USER_ERRORS = (FrameError, ModelConfigError, PromptError, ShapeError)


@contextlib.contextmanager
def reported_to_user() -> Iterator[None]:
    try:
        yield
    except USER_ERRORS as e:
        raise cvataa.BadFunctionError(str(e)) from e
