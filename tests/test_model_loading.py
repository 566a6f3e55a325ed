"""Model references, devices and lazy loading, with random-weight checkpoints offline."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import cvat_sdk.auto_annotation as cvataa
import pytest
import torch
from conftest import TINY

from tracker.cvat import shapes
from tracker.cvat.agent.tracking import create
from tracker.devtools.agent_worker import AgentWorker
from tracker.devtools.checkpoints import ensure_hf_checkpoint
from tracker.engine.errors import ModelConfigError
from tracker.engine.model_loading import check_checkpoint, resolve_dtype, resolve_model

ROOT = Path(__file__).resolve().parent.parent

SMALL = "facebook/sam2-hiera-small"


def _tracks(function, video) -> None:
    worker = AgentWorker(function)
    (state,) = worker.init(video.image(0), ("mask", shapes.rle_from_mask(video.masks[0])))
    for index in (1, 2):
        (shape,) = worker.track(video.image(index), [state])
        assert shape is not None and shape.type == "mask"


@pytest.mark.parametrize("model_id", [TINY, SMALL])
def test_loads_upstream_ids_from_the_offline_cache(hub_cache, video, model_id):
    ensure_hf_checkpoint(hub_cache, model_id)
    function = create(model_id=model_id, image_size=256)
    _tracks(function, video)
    assert function.engine.model.image_encoder.trunk.blocks  # the real Hiera backbone


def test_loads_a_local_checkpoint_file_and_folder(tiny_checkpoint, tmp_path, video):
    folder = tmp_path / "weights"
    folder.mkdir()
    local = folder / "sam2.1_hiera_tiny.pt"
    shutil.copy(tiny_checkpoint, local)
    _tracks(create(model_id=str(local), image_size=256), video)
    _tracks(create(model_id=str(folder), image_size=256), video)
    renamed = local.rename(folder / "finetuned.pt")
    _tracks(create(model_id=str(renamed), config="sam2.1_hiera_t", image_size=256), video)


def test_registration_reads_no_weights():
    # No checkpoint of the large model exists anywhere, and the hub is offline.
    function = create(model_id="facebook/sam2.1-hiera-large")
    assert sorted(function.spec.supported_shape_types) == ["mask", "polygon", "rectangle"]
    assert "engine" not in vars(function)
    with pytest.raises(cvataa.BadFunctionError, match="sam2.1_hiera_large.pt"):
        function.engine  # noqa: B018 - the first request loads the model


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"model_id": "facebook/sam3-hiera-tiny"}, "Unknown SAM2 model 'facebook/sam3-hiera-tiny'"),
        ({"model_id": "/no/such/sam2.1_hiera_tiny.pt"}, "does not exist on this machine"),
        (
            {"model_id": "facebook/sam2.1-hiera-tiny", "config": "sam9_hiera_q"},
            "Unknown SAM2 config",
        ),
        ({"device": "tpu"}, "not a torch device"),
        ({"dtype": "float8"}, "Unknown dtype"),
    ],
)
def test_wrong_references_are_explained(params, message):
    with pytest.raises(cvataa.BadFunctionError, match=message):
        create(**params)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_is_explained():
    with pytest.raises(cvataa.BadFunctionError, match="sees no CUDA GPU.*device=str:cpu"):
        create(device="cuda")


def test_checkpoint_without_known_name_needs_a_config(tiny_checkpoint, tmp_path):
    custom = tmp_path / "mine.pt"
    custom.symlink_to(tiny_checkpoint)
    with pytest.raises(cvataa.BadFunctionError, match="-p config=str:"):
        create(model_id=str(custom))


def test_device_auto_is_the_cpu_here():
    if not torch.cuda.is_available():
        assert create().options.model.device == torch.device("cpu")
        assert create().options.model.dtype == torch.float32


@pytest.mark.parametrize(
    ("device", "capabilities", "expected"),
    [
        ("cuda", {0: (7, 5)}, torch.float32),  # T4: bfloat16 only by slow emulation
        ("cuda", {0: (7, 0)}, torch.float32),  # V100
        ("cuda", {0: (8, 0)}, torch.bfloat16),  # A100
        ("cuda:1", {0: (9, 0), 1: (7, 5)}, torch.float32),  # the chosen GPU counts, not GPU 0
        ("cuda:1", {0: (7, 5), 1: (8, 6)}, torch.bfloat16),
        ("cpu", {0: (9, 0)}, torch.float32),
    ],
)
def test_auto_dtype_is_bfloat16_only_where_the_chosen_gpu_computes_it(
    monkeypatch, caplog, device, capabilities, expected
):
    def capability(chosen=None):
        index = torch.device(chosen).index if chosen is not None else 0
        return capabilities[index or 0]

    monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    caplog.set_level(logging.INFO, logger="tracker.engine.model_loading")
    assert resolve_dtype("auto", torch.device(device)) == expected
    assert f"dtype auto chose {str(expected).removeprefix('torch.')}" in caplog.text


@pytest.mark.parametrize("length", [0, 100_000], ids=["empty", "truncated"])
def test_an_interrupted_copy_of_a_checkpoint_asks_for_it_again(tiny_checkpoint, tmp_path, length):
    copy = tmp_path / "sam2.1_hiera_tiny.pt"
    copy.write_bytes(tiny_checkpoint.read_bytes()[:length])
    function = create(model_id=str(copy), image_size=256)
    with pytest.raises(cvataa.BadFunctionError, match="empty or truncated.*copy or download it"):
        function.engine  # noqa: B018 - the first request loads the model


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty or truncated"),
        (100_000, "empty or truncated"),
        (b"not a checkpoint", "no PyTorch checkpoint"),
        ({"weights": 1}, "no 'model' entry"),
    ],
    ids=["empty", "truncated", "garbage", "no-model"],
)
def test_a_checkpoint_file_is_checked_without_its_weights(
    tiny_checkpoint, tmp_path, content, message
):
    # What `serve` checks before it deploys replicas that would each fail on the file.
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    if isinstance(content, int):
        path.write_bytes(tiny_checkpoint.read_bytes()[:content])
    elif isinstance(content, dict):
        torch.save(content, path)
    else:
        path.write_bytes(content)
    with pytest.raises(ModelConfigError, match=message):
        check_checkpoint(resolve_model(str(path)))
    check_checkpoint(resolve_model(str(tiny_checkpoint), "sam2.1_hiera_t"))


def _out_of_memory(*args, **kwargs):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_while_loading_encoding_or_stepping_says_what_to_lower(
    tiny_checkpoint, video, monkeypatch
):
    from tracker.engine import model_loading

    with monkeypatch.context() as patch:
        patch.setattr(model_loading, "VIDEO_BUILDER", _out_of_memory)
        with pytest.raises(cvataa.BadFunctionError, match="loading SAM2.*-p image_size=int:512"):
            create(image_size=256).engine  # noqa: B018 - loads the model
    function = create(image_size=256)
    worker = AgentWorker(function)
    (state,) = worker.init(video.image(0), ("mask", shapes.rle_from_mask(video.masks[0])))
    with monkeypatch.context() as patch:
        patch.setattr(function.engine, "encode", _out_of_memory)
        with pytest.raises(cvataa.BadFunctionError, match="encoding a frame: lower -p image_size"):
            worker.track(video.image(1), [state])
    with monkeypatch.context() as patch:
        patch.setattr(function.engine, "step_many", _out_of_memory)
        with pytest.raises(cvataa.BadFunctionError, match="track fewer objects at once"):
            worker.track(video.image(1), [state])
    (shape,) = worker.track(video.image(1), [state])  # the agent goes on once memory is free
    assert shape is not None


@pytest.mark.parametrize("offline", ["1", "0"], ids=["HF_HUB_OFFLINE", "no network"])
def test_a_hub_id_without_its_cache_or_a_network_fails_at_once_with_one_message(tmp_path, offline):
    """The Hub's client retried five times (23 s, each warning printed twice) before its error;
    a refused connection (a closed port on loopback stands for no network) must end it at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    environment = {
        **os.environ,
        "HF_HOME": str(tmp_path / "empty-cache"),
        "HF_HUB_OFFLINE": offline,
        "HF_ENDPOINT": f"http://127.0.0.1:{closed_port}",
    }
    code = (
        "from tracker.engine import model_loading as m\n"
        "m._checkpoint_file(m.resolve_model('facebook/sam2.1-hiera-base-plus'))"
    )
    result = subprocess.run([sys.executable, "-c", code], env=environment, cwd=ROOT,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode != 0
    assert "Retry" not in result.stderr, result.stderr
    assert result.stderr.count("Could not get sam2.1_hiera_base_plus.pt") == 1, result.stderr


def test_the_readme_command_writes_a_random_checkpoint_from_the_short_config_name(tmp_path):
    path = tmp_path / "random" / "sam2.1_hiera_tiny.pt"
    result = subprocess.run(
        [sys.executable, "-m", "tracker.devtools.checkpoints", "sam2.1_hiera_t", str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    readme = (ROOT / "README.md").read_text()
    assert "python -m tracker.devtools.checkpoints sam2.1_hiera_t" in readme
    function = create(model_id=str(path), image_size=256)
    assert function.engine is not None  # the file loads as the tiny architecture
