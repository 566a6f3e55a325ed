"""One door to sam2 (issue 25 item 11): only `tracker/engine/upstream.py` imports `sam2` or
touches its private names, and a sam2 without one of them is refused before a model is built,
naming what is missing. Read from the source, like `test_layers.py`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from tracker.engine import upstream
from tracker.engine.model_loading import build_model, resolve_model

ROOT = Path(__file__).resolve().parent.parent
DOOR = ROOT / "tracker" / "engine" / "upstream.py"
SOURCES = sorted(
    path
    for folder in ("tracker", "ai-models", "serverless")
    for path in (ROOT / folder).rglob("*.py")
    if path != DOOR
)
#: Upstream's private names (and RoPE caches) that only the door may touch.
PRIVATE = {
    name
    for names in (*upstream.CLASS_ATTRIBUTES.values(), *upstream.INIT_ATTRIBUTES.values())
    for name in names
    if name.startswith("_")
} | {"freqs_cis", "compute_cis", "_C"}


def _violations(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "sam2"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "sam2":
                found.append(f"from {node.module}")
        elif isinstance(node, ast.Attribute) and node.attr in PRIVATE:
            found.append(f".{node.attr} (line {node.lineno})")
    return found


def test_the_door_lists_what_the_engine_touches():
    assert {"_prepare_backbone_features", "_encode_new_memory", "_features"} <= PRIVATE
    assert len(SOURCES) > 30


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_only_the_door_reaches_into_sam2(path):
    assert _violations(path) == [], f"use tracker.engine.upstream in {path.relative_to(ROOT)}"


def test_the_installed_sam2_and_model_have_every_name(tiny_model):
    assert upstream.missing() == []
    assert upstream.missing(tiny_model) == []


def test_a_sam2_without_a_private_name_is_refused_before_loading(monkeypatch, tiny_checkpoint):
    from tracker.engine import model_loading

    monkeypatch.delattr(upstream.SAM2Base, "_encode_new_memory")

    def never_read(reference):
        raise AssertionError("the checkpoint was read before sam2 was checked")

    monkeypatch.setattr(model_loading, "_checkpoint_file", never_read)
    with pytest.raises(upstream.UpstreamChangedError, match="SAM2Base._encode_new_memory"):
        build_model(resolve_model("facebook/sam2.1-hiera-tiny"), torch.device("cpu"), 256)


def test_a_model_without_a_replaced_submodule_is_named(monkeypatch, tiny_model):
    monkeypatch.delattr(tiny_model.memory_encoder, "pix_feat_proj")
    monkeypatch.delattr(tiny_model.memory_attention.layers[1], "cross_attn_image")
    assert upstream.missing(tiny_model) == [
        "model.memory_encoder.pix_feat_proj",
        "model.memory_attention.layers[1].cross_attn_image",
    ]
    with pytest.raises(upstream.UpstreamChangedError, match="pix_feat_proj"):
        upstream.check(tiny_model)


def test_a_constructor_that_stops_setting_an_attribute_is_named(monkeypatch):
    import inspect

    original = inspect.getsource

    def without_orig_hw(obj):
        source = original(obj)
        return source.replace("self._orig_hw =", "self._original_size =")

    monkeypatch.setattr(inspect, "getsource", without_orig_hw)
    assert upstream.missing() == ["SAM2ImagePredictor._orig_hw"]
