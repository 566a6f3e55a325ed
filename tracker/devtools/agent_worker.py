"""Drive a tracking function exactly as cvat-cli's agent worker process does."""

from __future__ import annotations

import itertools

import cvat_sdk.auto_annotation as cvataa
import PIL.Image
from cvat_cli._internal import agent_driver_interaction as interaction
from cvat_cli._internal import agent_driver_tracking as tracking
from cvat_cli._internal.agent_driver import set_worker_current_function


class AgentWorker:
    """The worker side of the agent: one function, the agent's own state container."""

    def __init__(self, function: cvataa.TrackingFunction, task_id: int = 1) -> None:
        counter = itertools.count()
        set_worker_current_function(function)
        tracking.AgentTrackingFunctionDriver.init_worker(lambda: f"state-{next(counter)}")
        self.task_id = task_id

    def init(self, image: PIL.Image.Image, *shapes: tuple[str, list]) -> list[str]:
        trackable = [cvataa.TrackableShape(type=t, points=p) for t, p in shapes]
        return tracking._worker_job_init_tracking(self.task_id, image, trackable)

    def track(self, image: PIL.Image.Image, state_ids: list[str]) -> list:
        return tracking._worker_job_track(self.task_id, image, state_ids)


def prompts(pos=(), neg=(), box=None):
    return interaction._InteractionPromptsImpl(
        pos_points=tuple(pos), neg_points=tuple(neg), bounding_box=box
    )


def interact(key, image, prompt):
    """What the agent does: the cached embedding if there is one, else preprocess the image."""
    shapes = interaction._worker_job_interact_from_cache(key, prompt)
    if shapes is None:
        shapes = interaction._worker_job_interact(key, image, prompt)
    return shapes
