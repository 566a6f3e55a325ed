"""The numeric context SAM2 runs in: no autograd, autocast where asked, TF32 on CUDA."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def _tf32_matmuls() -> Iterator[None]:
    """TF32 for float32 matmuls and convolutions, as upstream recommends on Ampere and newer GPUs,
    restored afterwards so that other code in the process keeps its own precision."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


@contextlib.contextmanager
def inference_context(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode())
        if dtype != torch.float32:
            stack.enter_context(torch.autocast(device.type, dtype=dtype))
        if device.type == "cuda":
            stack.enter_context(_tf32_matmuls())
        yield
