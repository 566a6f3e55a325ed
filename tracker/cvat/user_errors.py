"""Turn the errors a user can fix into `BadFunctionError`, the only kind cvat-cli shows them.

Any other exception reaches the user as "Unknown error", so every layer below raises its own
`ValueError` subclass with a message that says what to do, and the CVAT-facing functions wrap
their work in `reported_to_user()`. Messages that name a parameter are phrased in the syntax of the
interface the user configures (`tracker.cvat.options.Syntax`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import cvat_sdk.auto_annotation as cvataa

from tracker.cvat.options import Syntax
from tracker.cvat.shapes import ShapeError
from tracker.engine.errors import ModelConfigError
from tracker.engine.frames import FrameError
from tracker.engine.image_prompts import PromptError

USER_ERRORS = (FrameError, ModelConfigError, PromptError, ShapeError)


def user_message(error: Exception, syntax: Syntax = Syntax.AGENT) -> str:
    """The message of one of `USER_ERRORS`, with parameters named as `syntax` writes them."""
    return syntax.render(error) if isinstance(error, ModelConfigError) else str(error)


@contextlib.contextmanager
def reported_to_user(syntax: Syntax = Syntax.AGENT) -> Iterator[None]:
    try:
        yield
    except USER_ERRORS as e:
        raise cvataa.BadFunctionError(user_message(e, syntax)) from e
