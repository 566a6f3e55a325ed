"""The functions' parameters: one table, checked when a function is created, applied when it loads.

Checking reads no weights, so `cvat-cli function create-native` works on any machine; the model is
built by `ModelOptions.load`. Users reach the same parameters through three interfaces, and every
message names them in the syntax of the one in use (`Syntax`): cvat-cli's `-p image_size=int:256`,
`sam2-tracker`'s `--image-size 256`, and the environment of a Nuclio function or server,
`SAM2_IMAGE_SIZE=256`.

This module imports neither PyTorch nor sam2 (the engine is imported where a model is resolved),
so that `sam2-tracker --help` can show the table's defaults at once.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import os
from typing import TYPE_CHECKING, Any

from tracker.cvat.parameters import (
    INTERACTOR_LIMITS,
    TRACKER_LIMITS,
    ParameterSpec,
    RequestLimits,
    take,
    within,
)
from tracker.engine.errors import ModelConfigError, Parameter

__all__ = ["INTERACTOR_LIMITS", "TRACKER_LIMITS", "ParameterSpec", "RequestLimits", "take"]

if TYPE_CHECKING:
    import torch

    from tracker.engine import model_loading
    from tracker.engine.upstream import SAM2Base

_log = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "facebook/sam2.1-hiera-tiny"
DEFAULT_POLYGON_TOLERANCE = 1.0
DEFAULT_MAX_STATE_MEMORY_MB = 2048
#: The prompted frames an object keeps when prompted again (the engine's
#: `max_conditioning_frames`); each adds a memory frame and a pointer to every step of it.
DEFAULT_MAX_CONDITIONING_FRAMES = 4
MAX_CONDITIONING_FRAMES = 16
#: About 64 embeddings at 1024 px (16 MB each), 1,000 at 256 px.
DEFAULT_MAX_EMBEDDING_MEMORY_MB = 1024
DTYPES = ("auto", "float32", "bfloat16", "float16")
#: PyTorch's CPU threads by default: more rarely help SAM2's small matrices, and on a many-core
#: host shared with other work each extra thread waits for a core.
MAX_DEFAULT_THREADS = 8


class Syntax(enum.Enum):
    """How users of one interface write a parameter; `phrase` renders a `Parameter` so."""

    AGENT = "agent"  # cvat-cli's function files: -p name=type:value
    CLI = "cli"  # sam2-tracker: --name-with-dashes VALUE
    ENV = "env"  # Nuclio functions and servers: SAM2_NAME=value

    def phrase(self, parameter: Parameter) -> str:
        name, example = parameter.name, parameter.example
        if self is Syntax.CLI:
            flag = "--" + name.replace("_", "-")
            return flag if example is None else f"{flag} {_text(example)}"
        if self is Syntax.ENV:
            variable = "SAM2_" + name.upper()
            return variable if example is None else f"{variable}={_text(example)}"
        if example is None:
            return name
        return f"-p {name}={type(example).__name__}:{_text(example)}"

    def render(self, error: ModelConfigError) -> str:
        return error.render(self.phrase)


def _text(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


MODEL_PARAMETERS = (
    ParameterSpec(
        "model_id",
        str,
        DEFAULT_MODEL_ID,
        "a Hugging Face id of an upstream SAM2 model, a local .pt checkpoint, or a folder "
        "holding one",
    ),
    ParameterSpec(
        "config",
        str,
        None,
        "the architecture of a checkpoint with another name: sam2.1_hiera_t, sam2.1_hiera_s, "
        "sam2.1_hiera_b+ or sam2.1_hiera_l (default: from the file name)",
    ),
    ParameterSpec(
        "device", str, "auto", "auto (CUDA, then Apple MPS, then the CPU), cpu, cuda, cuda:N or mps"
    ),
    ParameterSpec(
        "dtype",
        str,
        "auto",
        "auto: bfloat16 on GPUs of compute capability 8.0 or higher, float32 elsewhere",
        DTYPES,
    ),
    ParameterSpec(
        "image_size",
        int,
        None,
        "SAM2's square input size, a multiple of 32 of at least 64; smaller is faster but "
        "coarser (default: the model's, 1024)",
    ),
    ParameterSpec(
        "threads",
        int,
        None,
        "PyTorch's CPU threads; on a machine shared with other work, 1 or 2 can be many times "
        f"faster (default: the cores this process may use, at most {MAX_DEFAULT_THREADS}, "
        "unless OMP_NUM_THREADS is set)",
    ),
)
TRACKER_PARAMETERS = (
    *MODEL_PARAMETERS,
    ParameterSpec(
        "polygon_tolerance",
        float,
        DEFAULT_POLYGON_TOLERANCE,
        "how far, in pixels, a simplified polygon may stray from the mask's outline (0: none)",
    ),
    ParameterSpec(
        "max_state_memory_mb",
        int,
        DEFAULT_MAX_STATE_MEMORY_MB,
        "memory budget over all tracking states; past it the least recently used are dropped",
    ),
    ParameterSpec(
        "max_conditioning_frames",
        int,
        DEFAULT_MAX_CONDITIONING_FRAMES,
        "the prompted frames an object prompted again keeps, the newest ones, from 1 to "
        f"{MAX_CONDITIONING_FRAMES}; each adds a memory frame to the object's state and its steps",
    ),
)
INTERACTOR_PARAMETERS = (
    *MODEL_PARAMETERS,
    ParameterSpec(
        "max_embedding_memory_mb",
        int,
        DEFAULT_MAX_EMBEDDING_MEMORY_MB,
        "memory budget over the agent's cached image embeddings; past it the least recently "
        "used are dropped (and computed again when their image is clicked)",
    ),
)


def _positive(value: int, name: str) -> int:
    if value <= 0:
        raise ModelConfigError(Parameter(name), " must be a positive number of megabytes.")
    return value


def default_threads() -> int | None:
    """The cores this process may use (its CPU affinity: a container's or `taskset`'s share,
    where PyTorch counts the host's), at most `MAX_DEFAULT_THREADS`; None, leaving PyTorch
    alone, when the user set `OMP_NUM_THREADS`."""
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_DEFAULT_THREADS))


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """Which SAM2 model to load, where, at which precision and size (shared by all functions)."""

    reference: model_loading.ModelReference
    device: torch.device
    dtype: torch.dtype
    image_size: int | None
    builder: model_loading.Builder
    builder_options: dict[str, Any]
    syntax: Syntax = Syntax.AGENT  # how messages name parameters to this function's users
    threads: int | None = None  # PyTorch's CPU threads; None: `default_threads()`

    @classmethod
    def from_params(
        cls,
        params: dict[str, Any],
        builder: model_loading.Builder,
        *,
        syntax: Syntax = Syntax.AGENT,
    ) -> ModelOptions:
        """Check the loading parameters; every other one must be an option of `builder`."""
        from tracker.engine import model_loading

        params = dict(params)
        model_id = take(params, "model_id", str, DEFAULT_MODEL_ID)
        config = take(params, "config", str, None)
        device = model_loading.resolve_device(take(params, "device", str, "auto"))
        dtype = model_loading.resolve_dtype(take(params, "dtype", str, "auto"), device)
        image_size = model_loading.check_image_size(take(params, "image_size", int, None))
        threads = take(params, "threads", int, None)
        if threads is not None and threads < 1:
            raise ModelConfigError(Parameter("threads"), " must be a whole number of at least 1.")
        return cls(
            reference=model_loading.resolve_model(model_id, config),
            device=device,
            dtype=dtype,
            image_size=image_size,
            builder=builder,
            builder_options=model_loading.check_builder_options(params, builder),
            syntax=syntax,
            threads=threads,
        )

    def check_checkpoint(self) -> None:
        """Refuse a local checkpoint that cannot load, reading no weights (ModelConfigError)."""
        from tracker.engine import model_loading

        model_loading.check_checkpoint(self.reference)

    def load(self) -> SAM2Base:
        import torch

        from tracker.engine import model_loading

        threads = self.threads or default_threads()
        if threads is not None:
            torch.set_num_threads(threads)
        _log.info("PyTorch uses %d CPU threads", torch.get_num_threads())

        model = model_loading.build_model(
            self.reference, self.device, self.image_size, self.builder_options, self.builder
        )
        _log.info("Running SAM2 with %s on %s", self.dtype, self.device)
        return model


@dataclasses.dataclass(frozen=True)
class TrackerOptions:
    model: ModelOptions
    polygon_tolerance: float
    max_state_memory_mb: int
    limits: RequestLimits = RequestLimits()  # of one lambda-protocol request
    # The prompted frames an object keeps (`StreamingSam2`'s `max_conditioning_frames`).
    max_conditioning_frames: int = DEFAULT_MAX_CONDITIONING_FRAMES

    @property
    def syntax(self) -> Syntax:
        return self.model.syntax

    @classmethod
    def from_params(
        cls, params: dict[str, Any], *, syntax: Syntax = Syntax.AGENT
    ) -> TrackerOptions:
        """Check every parameter; raises ModelConfigError with a message for the user."""
        from tracker.engine import model_loading

        params = dict(params)
        tolerance = take(params, "polygon_tolerance", float, DEFAULT_POLYGON_TOLERANCE)
        if tolerance < 0:
            raise ModelConfigError(
                Parameter("polygon_tolerance"), " must be 0 (no simplification) or more pixels."
            )
        budget = take(params, "max_state_memory_mb", int, DEFAULT_MAX_STATE_MEMORY_MB)
        conditioning = take(params, "max_conditioning_frames", int, DEFAULT_MAX_CONDITIONING_FRAMES)
        within("max_conditioning_frames", conditioning, 1, MAX_CONDITIONING_FRAMES)
        model = ModelOptions.from_params(params, model_loading.VIDEO_BUILDER, syntax=syntax)
        return cls(
            model,
            tolerance,
            _positive(budget, "max_state_memory_mb"),
            max_conditioning_frames=conditioning,
        )


@dataclasses.dataclass(frozen=True)
class InteractorOptions:
    model: ModelOptions
    max_embedding_memory_mb: int
    limits: RequestLimits = RequestLimits()  # of one lambda-protocol request

    @property
    def syntax(self) -> Syntax:
        return self.model.syntax

    @classmethod
    def from_params(
        cls, params: dict[str, Any], *, syntax: Syntax = Syntax.AGENT
    ) -> InteractorOptions:
        """Check every parameter; raises ModelConfigError with a message for the user."""
        from tracker.engine import model_loading

        params = dict(params)
        budget = take(params, "max_embedding_memory_mb", int, DEFAULT_MAX_EMBEDDING_MEMORY_MB)
        model = ModelOptions.from_params(params, model_loading.IMAGE_BUILDER, syntax=syntax)
        return cls(model, _positive(budget, "max_embedding_memory_mb"))
