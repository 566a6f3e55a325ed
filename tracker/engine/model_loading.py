"""Find, check and build SAM2 models: Hugging Face ids, local checkpoints, devices, dtypes.

Checking (`resolve_model`, `resolve_device`, ...) is cheap and reads no weights, so a function can
be registered on a machine without weights or GPU; `build_model` does the expensive part.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import pickle
import socket
import time
import urllib.parse
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch

from tracker.engine import upstream
from tracker.engine.errors import ModelConfigError, Parameter
from tracker.engine.upstream import (
    HF_MODEL_ID_TO_FILENAMES,
    SAM2Base,
    build_sam2,
    build_sam2_video_predictor,
)

_log = logging.getLogger(__name__)

#: Checkpoint file name -> config name, for every upstream checkpoint.
CONFIG_BY_CHECKPOINT_NAME = {ckpt: cfg for cfg, ckpt in HF_MODEL_ID_TO_FILENAMES.values()}

#: Upstream's builders: the video predictor for tracking, the plain model for image prompts.
Builder = Callable[..., SAM2Base]
VIDEO_BUILDER: Builder = build_sam2_video_predictor
IMAGE_BUILDER: Builder = build_sam2

#: Builder keywords that are ours to fill; users may set the others with `-p`.
_BUILDER_OWN_ARGS = {
    "config_file",
    "ckpt_path",
    "device",
    "mode",
    "hydra_overrides_extra",
    "kwargs",
}


def builder_options(builder: Builder) -> frozenset[str]:
    return frozenset(inspect.signature(builder).parameters.keys() - _BUILDER_OWN_ARGS)


@dataclasses.dataclass(frozen=True)
class ModelReference:
    """Where a model's weights come from and which architecture config they fit."""

    config_name: str
    checkpoint_path: Path | None = None  # local file; None means `hf_model_id` is downloaded
    hf_model_id: str | None = None

    def describe(self) -> str:
        return self.hf_model_id or str(self.checkpoint_path)


def _config_exists(config_name: str) -> bool:
    return (upstream.package_dir() / config_name).is_file()


def resolve_config(config: str) -> str:
    """Accept `configs/sam2.1/sam2.1_hiera_t.yaml` or the short `sam2.1_hiera_t`."""
    candidates = [config]
    if not config.startswith("configs/"):
        stem = config.removesuffix(".yaml")
        family = "sam2.1" if stem.startswith("sam2.1") else "sam2"
        candidates.append(f"configs/{family}/{stem}.yaml")
    for name in candidates:
        if _config_exists(name):
            return name
    known = ", ".join(sorted(Path(c).stem for c in CONFIG_BY_CHECKPOINT_NAME.values()))
    raise ModelConfigError(
        f"Unknown SAM2 config {config!r} for ", Parameter("config"), f"; use one of: {known}."
    )


def _checkpoint_reference(path: Path, config: str | None) -> ModelReference:
    if config is not None:
        return ModelReference(resolve_config(config), checkpoint_path=path)
    if path.name in CONFIG_BY_CHECKPOINT_NAME:
        return ModelReference(CONFIG_BY_CHECKPOINT_NAME[path.name], checkpoint_path=path)
    raise ModelConfigError(
        f"Cannot tell which SAM2 architecture {str(path)!r} holds from its name; add ",
        Parameter("config", "<name>"),
        ", for example sam2.1_hiera_t, sam2.1_hiera_s, sam2.1_hiera_b+ or sam2.1_hiera_l.",
    )


def resolve_model(model_id: str, config: str | None = None) -> ModelReference:
    """Turn `model_id` (an upstream Hugging Face id, a `.pt` file or a folder) into a reference."""
    if model_id in HF_MODEL_ID_TO_FILENAMES:
        config_name, _ = HF_MODEL_ID_TO_FILENAMES[model_id]
        return ModelReference(
            resolve_config(config) if config else config_name, hf_model_id=model_id
        )
    path = Path(os.path.expanduser(model_id))
    if path.is_file():
        return _checkpoint_reference(path, config)
    if path.is_dir():
        checkpoints = sorted(path.glob("*.pt"))
        known = [p for p in checkpoints if p.name in CONFIG_BY_CHECKPOINT_NAME]
        chosen = known or checkpoints
        if len(chosen) != 1:
            found = ", ".join(p.name for p in checkpoints) or "none"
            raise ModelConfigError(
                f"The folder {str(path)!r} must hold exactly one SAM2 checkpoint (.pt); "
                f"found: {found}. Pass the file itself with ",
                Parameter("model_id", "<path>"),
                ".",
            )
        return _checkpoint_reference(chosen[0], config)
    if path.suffix == ".pt" or model_id.startswith((os.sep, ".", "~")):
        raise ModelConfigError(f"The checkpoint {model_id!r} does not exist on this machine.")
    ids = ", ".join(HF_MODEL_ID_TO_FILENAMES)
    raise ModelConfigError(
        f"Unknown SAM2 model {model_id!r}. Use one of the Hugging Face ids {ids}, "
        "or the path of a local .pt checkpoint (or of a folder holding one) as ",
        Parameter("model_id"),
        ".",
    )


def resolve_device(device: str) -> torch.device:
    """`auto` picks CUDA, then Apple MPS, then the CPU; anything else must be usable here."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ModelConfigError(
            f"{device!r} is not a torch device; give ",
            Parameter("device"),
            " as auto, cpu, cuda, cuda:N or mps.",
        ) from e
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelConfigError(
                f"Device {device!r} is not available: this PyTorch sees no CUDA GPU. Use ",
                Parameter("device", "cpu"),
                ", or install a CUDA build of PyTorch and a driver.",
            )
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise ModelConfigError(
                f"Device {device!r} is not available: only {torch.cuda.device_count()} "
                "CUDA device(s) are visible."
            )
    elif chosen.type == "mps" and not torch.backends.mps.is_available():
        raise ModelConfigError(f"Device {device!r} is not available on this machine.")
    elif chosen.type not in ("cpu", "cuda", "mps"):
        raise ModelConfigError(
            f"Device type {chosen.type!r} is not supported; use cpu, cuda or mps."
        )
    return chosen


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto`: bfloat16 autocast (as upstream runs SAM2) where the chosen GPU computes bfloat16
    natively, from compute capability 8.0 (Ampere) on; float32 elsewhere.

    `torch.cuda.is_bf16_supported()` is no guide: it is true on T4 and V100, which emulate
    bfloat16 slowly, and it asks about the current device rather than the chosen `cuda:N`.
    """
    if dtype == "auto":
        chosen = torch.float32
        if device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0):
            chosen = torch.bfloat16
        _log.info("dtype auto chose %s on %s", str(chosen).removeprefix("torch."), device)
        return chosen
    if dtype not in _DTYPES:
        raise ModelConfigError(
            f"Unknown dtype {dtype!r}; give ",
            Parameter("dtype"),
            " as auto, float32, bfloat16 or float16.",
        )
    if device.type == "cpu" and dtype != "float32":
        _log.warning("%s on the CPU is usually much slower than float32", dtype)
    return _DTYPES[dtype]


def check_image_size(image_size: int | None) -> int | None:
    """SAM2's backbone has stride 32, and its RoPE tables assume square feature maps."""
    if image_size is None:
        return None
    if not isinstance(image_size, int) or image_size < 64 or image_size % 32:
        raise ModelConfigError(
            Parameter("image_size"),
            " must be a multiple of 32 of at least 64 (SAM2's native size is 1024); "
            f"got {image_size!r}.",
        )
    return image_size


def check_builder_options(options: dict, builder: Builder) -> dict:
    known = builder_options(builder)
    unknown = sorted(set(options) - known)
    if unknown:
        raise ModelConfigError(
            f"Unknown parameter(s) {', '.join(unknown)}. Besides this function's own, the SAM2 "
            f"model builder accepts: {', '.join(sorted(known))}."
        )
    return options


def _checkpoint_file(reference: ModelReference) -> Path:
    if reference.checkpoint_path is not None:
        return reference.checkpoint_path
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    _, filename = HF_MODEL_ID_TO_FILENAMES[reference.hf_model_id]
    try:
        # Upstream's checkpoints never change: a cached one is used without asking the Hub.
        return Path(
            hf_hub_download(repo_id=reference.hf_model_id, filename=filename, local_files_only=True)
        )
    except LocalEntryNotFoundError:
        pass
    try:
        if not constants.HF_HUB_OFFLINE:
            _check_reachable(constants.ENDPOINT)  # else the Hub's client retries for 23 s
        return Path(hf_hub_download(repo_id=reference.hf_model_id, filename=filename))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as e:
        raise ModelConfigError(
            f"Could not get {filename} of {reference.hf_model_id} from Hugging Face ({e}). "
            "Check the network, or download the checkpoint on another machine and pass its "
            "path with ",
            Parameter("model_id", "/path/to/" + filename),
            " (offline: set HF_HUB_OFFLINE=1 and HF_HOME to a cache that holds it).",
        ) from e


def _check_reachable(endpoint: str, timeout_s: float = 5.0) -> None:
    """Raise OSError at once when the Hugging Face endpoint cannot be connected to."""
    url = urllib.parse.urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=timeout_s).close()
    except OSError as e:
        raise OSError(f"{url.hostname}:{port} cannot be reached: {e}") from e


def build_model(
    reference: ModelReference,
    device: torch.device,
    image_size: int | None = None,
    options: dict | None = None,
    builder: Builder = VIDEO_BUILDER,
) -> SAM2Base:
    """Read the checkpoint and build the model with upstream's `builder` on `device`.

    Raises `upstream.UpstreamChangedError` before reading anything when the installed sam2 lacks
    a name the tracker uses, and after building when the model lacks one."""
    upstream.check()
    started = time.perf_counter()
    checkpoint = _checkpoint_file(reference)
    overrides = []
    if image_size is not None:
        feat = image_size // 16
        overrides = [
            f"++model.image_size={image_size}",
            # RoPE tables of memory attention are sized for the stride-16 feature map.
            f"++model.memory_attention.layer.self_attention.feat_sizes=[{feat},{feat}]",
            f"++model.memory_attention.layer.cross_attention.feat_sizes=[{feat},{feat}]",
        ]
    try:
        model = builder(
            reference.config_name,
            ckpt_path=str(checkpoint),
            device=device,
            hydra_overrides_extra=overrides,
            **(options or {}),
        )
    except torch.cuda.OutOfMemoryError:
        raise  # the caller knows which of its parameters would need less memory
    except EOFError as e:
        raise _truncated(reference, checkpoint) from e
    except RuntimeError as e:
        if "zip archive" in str(e):  # PyTorch's reader finds no end of the file
            raise _truncated(reference, checkpoint) from e
        raise _not_loadable(reference, checkpoint, e) from e
    except (KeyError, OSError, pickle.UnpicklingError) as e:
        raise _not_loadable(reference, checkpoint, e) from e
    upstream.check(model)
    _log.info(
        "Loaded SAM2 %s (%s) on %s at %d px in %.1f s",
        reference.describe(),
        reference.config_name,
        device,
        model.image_size,
        time.perf_counter() - started,
    )
    return model


def _truncated(reference: ModelReference, checkpoint: Path) -> ModelConfigError:
    """An empty or cut-off file: an interrupted download or copy, not a wrong architecture."""
    again = "copy or download it again"
    if reference.hf_model_id is not None:
        again = f"hf download {reference.hf_model_id} {checkpoint.name} --force-download"
    return ModelConfigError(
        f"The checkpoint {str(checkpoint)!r} is empty or truncated (an interrupted download or "
        f"copy?); get it again: {again}."
    )


def _not_loadable(reference: ModelReference, checkpoint: Path, e: Exception) -> ModelConfigError:
    return ModelConfigError(
        f"Could not load {str(checkpoint)!r} as {reference.config_name}: {e}. "
        "Check that the file is a SAM2 checkpoint of that architecture."
    )


def check_checkpoint(reference: ModelReference) -> None:
    """Raise ModelConfigError when a local checkpoint file cannot be a SAM2 checkpoint (empty,
    cut off, not PyTorch's, no "model" entry), reading its index but not its weights, so that a
    server refuses it before it deploys replicas that would each fail on it. Hugging Face ids
    are left to loading: their files are fetched where the replicas run."""
    path = reference.checkpoint_path
    if path is None:
        return
    if path.stat().st_size == 0:
        raise _truncated(reference, path)
    zipped = zipfile.is_zipfile(path)  # PyTorch's format since 1.6: the weights are mapped
    try:
        content = torch.load(path, map_location="cpu", mmap=zipped, weights_only=True)
    except EOFError as e:
        raise _truncated(reference, path) from e
    except pickle.UnpicklingError as e:
        raise _not_loadable(reference, path, ValueError("it is no PyTorch checkpoint")) from e
    except (RuntimeError, KeyError, OSError) as e:
        if "zip archive" in str(e):
            raise _truncated(reference, path) from e
        raise _not_loadable(reference, path, e) from e
    if not isinstance(content, dict) or "model" not in content:
        raise _not_loadable(reference, path, KeyError("the file has no 'model' entry"))
