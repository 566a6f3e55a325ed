"""What both agent functions share: parameters checked when the function is created (no weights
read, so `create-native` works anywhere), errors phrased for the caller's syntax, and the model
loaded at creation only inside cvat-cli's agent worker."""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar, Self

from tracker.cvat.agent.startup import in_agent_worker
from tracker.cvat.options import Syntax
from tracker.cvat.user_errors import reported_to_user


class AgentFunction:
    """`options_class` checks the parameters (`TrackerOptions`, `InteractorOptions`); `stage`
    is what `_reported` names by default; `load` loads the model."""

    options_class: ClassVar[Any]
    stage: ClassVar[str]

    def __init__(self, options: Any) -> None:
        self.options = options

    @classmethod
    def from_params(cls, params: dict[str, Any], syntax: Syntax = Syntax.AGENT) -> Self:
        """Check `params`, with errors phrased in `syntax`; no weights are read yet."""
        with reported_to_user(syntax):
            return cls(cls.options_class.from_params(params, syntax=syntax))

    def _reported(self, stage: str | None = None) -> contextlib.AbstractContextManager[None]:
        """User errors and running out of GPU memory during `stage`, as `BadFunctionError`s."""
        return reported_to_user(self.options.syntax, stage or self.stage)

    def load(self) -> None:
        raise NotImplementedError

    @classmethod
    def created(cls, params: dict[str, Any]) -> Self:
        """What the function file's `create(**params)` returns. In `run-agent`'s worker the
        model is loaded here, before the first request (see `tracker.cvat.agent.startup`), so a
        wrong model fails the agent's start with why."""
        function = cls.from_params(params)
        if in_agent_worker():
            function.load()
        return function
