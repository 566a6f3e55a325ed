"""Turn the errors a user can fix into `BadFunctionError`, the only kind cvat-cli shows them.

Any other exception reaches the user as "Unknown error", so every layer below raises its own
`ValueError` subclass with a message that says what to do, and the CVAT-facing functions wrap
their work in `reported_to_user()`. Messages that name a parameter are phrased in the syntax of the
interface the user configures (`tracker.cvat.options.Syntax`). Messages a Nuclio proxy image
gives too (a busy server) live in `user_messages`, which needs neither PyTorch nor cvat_sdk, and
are exported here with the rest.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import cvat_sdk.auto_annotation as cvataa
import torch

from tracker.cvat.options import Syntax
from tracker.cvat.shapes import ShapeError
from tracker.cvat.user_messages import replica_busy_message as replica_busy_message
from tracker.cvat.user_messages import server_busy_message as server_busy_message
from tracker.engine.errors import ModelConfigError, Parameter, render
from tracker.engine.frames import FrameError
from tracker.engine.image_prompts import PromptError

USER_ERRORS = (FrameError, ModelConfigError, PromptError, ShapeError)


def user_message(error: Exception, syntax: Syntax = Syntax.AGENT) -> str:
    """The message of an error, with parameters named as `syntax` writes them: a
    `ModelConfigError`, or an error made of one (a store's `StateDroppedError` carries
    `dropped_state_message`)."""
    if isinstance(error, ModelConfigError):
        return syntax.render(error)
    if len(error.args) == 1 and isinstance(error.args[0], ModelConfigError):
        return syntax.render(error.args[0])
    return str(error)


#: What to do when the GPU runs out of memory, by what was running: loading the model, encoding
#: a frame (tracker) or an image (interactor), stepping tracked objects.
OUT_OF_MEMORY_ADVICE = {
    "load": (
        "Out of GPU memory while loading SAM2: free the GPU, choose a smaller ",
        Parameter("model_id"),
        ", or lower ",
        Parameter("image_size", 512),
        ".",
    ),
    "encode": (
        "Out of GPU memory while encoding a frame: lower ",
        Parameter("image_size", 512),
        " or the memory kept for tracking states, ",
        Parameter("max_state_memory_mb", 1024),
        ".",
    ),
    "embed": (
        "Out of GPU memory while encoding an image: lower ",
        Parameter("image_size", 512),
        " or the memory kept for embeddings, ",
        Parameter("max_embedding_memory_mb", 512),
        ".",
    ),
    "track": (
        "Out of GPU memory while tracking: track fewer objects at once, or lower ",
        Parameter("max_state_memory_mb", 1024),
        " or ",
        Parameter("image_size", 512),
        ".",
    ),
}


class StageOutOfMemoryError(RuntimeError):
    """The GPU ran out of memory during `stage` (a key of `OUT_OF_MEMORY_ADVICE`): what was
    running decides the advice, as a frame's encoding needs other remedies than many objects."""

    def __init__(self, stage: str) -> None:
        super().__init__(render(OUT_OF_MEMORY_ADVICE[stage]))
        self.stage = stage

    def advice(self, syntax: Syntax) -> str:
        return render(OUT_OF_MEMORY_ADVICE[self.stage], syntax.phrase)


class OutOfMemoryReportedError(cvataa.BadFunctionError):
    """Running out of GPU memory, told to the user; a lambda-protocol answer makes it a 503
    (the operator's to fix, or to retry later), not a 400 like other `BadFunctionError`s."""


def _give_memory_back() -> None:
    """The failed request's blocks go back to the GPU, so that the next request can succeed."""
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def memory_stage(stage: str) -> Iterator[None]:
    """Running out of GPU memory inside becomes `StageOutOfMemoryError(stage)`."""
    try:
        yield
    except torch.OutOfMemoryError as e:
        _give_memory_back()
        raise StageOutOfMemoryError(stage) from e


@contextlib.contextmanager
def reported_to_user(syntax: Syntax = Syntax.AGENT, stage: str = "track") -> Iterator[None]:
    """Errors a user can fix become `BadFunctionError`s, phrased in `syntax`; running out of GPU
    memory during `stage` (unless a deeper `memory_stage` named it) is one of them."""
    try:
        yield
    except USER_ERRORS as e:
        raise cvataa.BadFunctionError(user_message(e, syntax)) from e
    except (torch.OutOfMemoryError, StageOutOfMemoryError) as e:
        _give_memory_back()
        known = e if isinstance(e, StageOutOfMemoryError) else StageOutOfMemoryError(stage)
        raise OutOfMemoryReportedError(known.advice(syntax)) from e
