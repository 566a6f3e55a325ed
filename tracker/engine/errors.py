"""Errors a user can fix by changing a parameter, phrased for whichever interface they typed it in.

The same parameter is `-p image_size=int:256` to cvat-cli, `--image-size 256` to `sam2-tracker` and
`SAM2_IMAGE_SIZE=256` to a Nuclio function. The engine cannot know which of them its caller uses,
so its messages name parameters as `Parameter` parts, and the adapter layer
(`tracker.cvat.options.Syntax`) renders them. This module imports nothing heavy, so that a
command's `--help` can use it without loading PyTorch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence


@dataclasses.dataclass(frozen=True)
class Parameter:
    """A parameter named in a message, optionally with the value (or placeholder) to give it."""

    name: str
    example: str | int | float | bool | None = None

    def __str__(self) -> str:
        """Interface-neutral: `name=value`, for logs and for callers that render nothing."""
        return self.name if self.example is None else f"{self.name}={self.example}"


MessagePart = str | Parameter


def render(parts: Sequence[MessagePart], phrase: Callable[[Parameter], str] = str) -> str:
    return "".join(phrase(part) if isinstance(part, Parameter) else part for part in parts)


class ModelConfigError(ValueError):
    """A model reference, device or option that cannot work; the message says what to do.

    Built from text and `Parameter` parts; `str()` gives the neutral form, `render(phrase)` the
    form of one interface.
    """

    def __init__(self, *parts: MessagePart) -> None:
        self.parts = parts
        super().__init__(render(parts))

    def render(self, phrase: Callable[[Parameter], str]) -> str:
        return render(self.parts, phrase)
