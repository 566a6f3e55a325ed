"""One numeric context per request: nested contexts of the same kind enter autocast once."""

from __future__ import annotations

import torch

from tracker.engine import precision
from tracker.engine.precision import inference_context


def _counting_autocast(monkeypatch) -> list:
    entered = []
    original = torch.autocast

    def counting(*args, **kwargs):
        entered.append(kwargs.get("dtype"))
        return original(*args, **kwargs)

    monkeypatch.setattr(precision.torch, "autocast", counting)
    return entered


def test_a_session_enters_autocast_once_for_all_calls_inside(monkeypatch):
    entered = _counting_autocast(monkeypatch)
    cpu = torch.device("cpu")
    # float16 autocast on the CPU stands in for a GPU's bfloat16 (never bfloat16 on this CPU).
    with inference_context(cpu, torch.float16):
        for _ in range(3):
            with inference_context(cpu, torch.float16):
                assert torch.is_autocast_enabled("cpu") and torch.is_inference_mode_enabled()
        assert torch.is_autocast_enabled("cpu")
    assert entered == [torch.float16]
    assert not torch.is_autocast_enabled("cpu") and not torch.is_inference_mode_enabled()
    with inference_context(cpu, torch.float16):
        pass
    assert len(entered) == 2


def test_a_different_context_inside_is_entered(monkeypatch):
    entered = _counting_autocast(monkeypatch)
    cpu = torch.device("cpu")
    with inference_context(cpu, torch.float32):
        with inference_context(cpu, torch.float16):
            assert torch.is_autocast_enabled("cpu")
        assert not torch.is_autocast_enabled("cpu")
    assert entered == [torch.float16]


def test_engine_session_keeps_one_context_over_encode_and_steps(tiny_model, video, monkeypatch):
    from tracker.engine.streaming import StreamingSam2

    engine = StreamingSam2(tiny_model)
    state, _ = engine.start_from_mask(engine.encode(video.image(0)), video.masks[0])
    entered = []
    original = precision.torch.inference_mode
    monkeypatch.setattr(
        precision.torch, "inference_mode", lambda *a: entered.append(1) or original(*a)
    )
    with engine.session():
        frame = engine.encode(video.image(1))
        engine.step_many(frame, [state])
        engine.step(frame, state.fork())
    assert len(entered) == 1
