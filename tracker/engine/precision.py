"""The numeric context SAM2 runs in: no autograd, autocast where asked, TF32 on CUDA.

Leaving the outermost `torch.autocast` clears its cache of weights cast to the lower precision,
so a context entered per object re-casts every weight per object. Contexts nest: inside one for
the same device and dtype (e.g. a request's `StreamingSam2.session()`), another is free and the
weights are cast once for the whole request, as upstream casts them once per frame.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

_open = threading.local()  # the (device, dtype) contexts open in this thread, innermost last


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
    key = (torch.device(device), dtype)
    stack = _open.__dict__.setdefault("stack", [])
    if stack and stack[-1] == key:
        yield  # the enclosing context is this one: keep it, and autocast's weight cache
        return
    with contextlib.ExitStack() as contexts:
        contexts.enter_context(torch.inference_mode())
        if dtype != torch.float32:
            contexts.enter_context(torch.autocast(device.type, dtype=dtype))
        if device.type == "cuda":
            contexts.enter_context(_tf32_matmuls())
        stack.append(key)
        try:
            yield
        finally:
            stack.pop()
