"""Shared fixtures: an offline Hugging Face cache of random-weight checkpoints, synthetic videos."""

from __future__ import annotations

import os
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

# huggingface_hub reads these when it is imported, so they are set before anything imports it.
# The cache lives outside the checkout and is reused between runs of the same sam2 version.
_CACHE = Path(tempfile.gettempdir()) / f"cvat-sam2-tracker-tests-sam2-{version('sam2')}"
HF_HOME = _CACHE / "hf-home"
os.environ["HF_HOME"] = str(HF_HOME)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.pop("HF_HUB_CACHE", None)
os.environ.pop("HUGGINGFACE_HUB_CACHE", None)
import tracker  # noqa: E402, F401  (before PyTorch: it sets OpenMP's wait policy, as for users)

sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402
import torch  # noqa: E402

from tracker.devtools.checkpoints import ensure_hf_checkpoint  # noqa: E402
from tracker.devtools.redis_server import RedisServer  # noqa: E402
from tracker.devtools.synthetic import SyntheticVideo, make_video  # noqa: E402
from tracker.engine.model_loading import build_model, resolve_model  # noqa: E402

TINY = "facebook/sam2.1-hiera-tiny"
SMALL_IMAGE_SIZE = 256


def pytest_addoption(parser):
    parser.addoption(
        "--soak-requests",
        type=int,
        default=30,
        help="track requests (of 50 states each) in the memory soak test, after warm-up",
    )


@pytest.fixture(scope="session")
def hub_cache() -> Path:
    return HF_HOME / "hub"


@pytest.fixture(scope="session")
def tiny_checkpoint(hub_cache: Path) -> Path:
    return ensure_hf_checkpoint(hub_cache, TINY)


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    """The default model at 256 px, shared by tests that only read it."""
    return build_model(resolve_model(TINY), device=torch.device("cpu"), image_size=SMALL_IMAGE_SIZE)


@pytest.fixture(scope="session")
def video(tmp_path_factory) -> SyntheticVideo:
    """A 32-frame 320x240 JPEG video of a textured object moving over a textured background."""
    return make_video(tmp_path_factory.mktemp("video"), num_frames=32, width=320, height=240)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """One real redis-server for the session; tests use their own keys (random handles)."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture()
def environment(monkeypatch):
    """The Nuclio tracker's environment: the tiny model at 256 px on the CPU, states in memory."""
    for name in ("CVAT_FUNCTIONS_REDIS_HOST", "CVAT_REDIS_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SAM2_IMAGE_SIZE", "256")
    monkeypatch.setenv("SAM2_DEVICE", "cpu")
    return monkeypatch


@pytest.fixture()
def with_redis(environment, redis_server):
    """`environment` with the states in the session's redis-server."""
    for name, value in redis_server.env.items():
        environment.setenv(name, value)
    return redis_server
