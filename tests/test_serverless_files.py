"""The Nuclio function files and the Dockerfile agree with the code and the README.

Docker and the Nuclio processor cannot run here; these checks cover what CVAT's deploy scripts
and `lambda_manager` read from the files, and that the image installs what the README installs.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from nuclio_driver import SERVERLESS, load_entry

from tracker.cvat import env_options
from tracker.cvat.options import INTERACTOR_PARAMETERS, TRACKER_PARAMETERS

ROOT = Path(__file__).parent.parent
FILES = sorted(SERVERLESS.glob("*/nuclio/function*.yaml"))
KNOWN_VARIABLES = {
    env_options.variable(name)
    for name in (
        *(spec.name for spec in (*TRACKER_PARAMETERS, *INTERACTOR_PARAMETERS)),
        "interactor_answer",
        "server_url",
        "server_connect_timeout",
        "server_read_timeout",
        "server_call_timeout",
    )
}
VARIANTS = {"function.yaml": "cpu", "function-gpu.yaml": "gpu", "function-proxy.yaml": "proxy"}


def test_both_functions_have_cpu_gpu_and_proxy_files():
    # CVAT's deploy_cpu.sh deploys every **/function.yaml, deploy_gpu.sh every function-gpu.yaml.
    names = {(f.parent.parent.name, f.name) for f in FILES}
    assert names == {(kind, name) for kind in ("tracker", "interactor") for name in VARIANTS}


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_function_file(path):
    config = yaml.safe_load(path.read_text())
    kind = path.parent.parent.name
    annotations = config["metadata"]["annotations"]
    assert annotations["type"] == kind
    # CVAT's UI intercepts its own SAM function names and expects embeddings from them.
    assert "facebookresearch" not in config["metadata"]["name"]
    if kind == "interactor":
        assert int(annotations["version"]) >= 2, "CVAT's UI disables interactors below version 2"
    else:
        assert "rectangle" in annotations["supported_shape_types"].split(","), "AI Tools tab"
    spec = config["spec"]
    module, function = spec["handler"].split(":")
    entry = load_entry(kind)
    assert module == "main" and callable(getattr(entry, function))
    assert callable(entry.init_context)
    variables = {item["name"]: item["value"] for item in spec["env"]}
    assert variables.keys() <= KNOWN_VARIABLES
    variant = VARIANTS[path.name]
    if variant == "gpu":
        assert spec["resources"]["limits"]["nvidia.com/gpu"] == 1
    else:
        assert "resources" not in spec
    if variant == "proxy":
        assert "SAM2_SERVER_URL" in variables and "SAM2_SERVER_TOKEN" not in variables
        assert not any(name.startswith("SAM2_MODEL") for name in variables)
    else:
        assert variables["SAM2_DEVICE"] == {"gpu": "cuda", "cpu": "cpu"}[variant]
    assert spec["build"]["baseImage"] == f"cvat-sam2-tracker:{variant}"
    trigger = spec["triggers"]["myHttpTrigger"]
    assert trigger["attributes"]["maxRequestBodySize"] >= 48 * 1024 * 1024, "4K PNG in base64"


def test_the_image_installs_what_the_readme_installs():
    readme = (ROOT / "README.md").read_text()
    setup = re.search(r"<!-- setup -->\n```bash\n(.*?)\n```", readme, re.S).group(1)
    dockerfile = (ROOT / "Dockerfile").read_text()
    for step in ("torch==", "torchvision==", "--no-build-isolation sam2=="):
        readme_step = re.search(re.escape(step) + r"\S*", setup).group(0)
        assert readme_step in dockerfile, f"{readme_step} differs between README and Dockerfile"
    for path in ("pyproject.toml", "tracker"):
        assert f"COPY {path}" in dockerfile


def _dockerfile_run(containing: str) -> str:
    """The shell command of the Dockerfile's RUN step that contains `containing`, continuation
    lines joined as Docker joins them."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", "")
    steps = [line[4:] for line in text.splitlines() if line.startswith("RUN ")]
    (step,) = [s for s in steps if containing in s]
    return step


@pytest.mark.parametrize(
    ("variant", "ids", "fetched"),
    [
        ("proxy", "facebook/sam2.1-hiera-large", False),  # not cached, and never asked for
        ("cpu", "facebook/sam2.1-hiera-large", True),  # asked for: offline, it fails
        ("cpu", "facebook/sam2.1-hiera-tiny", True),  # in the tests' offline cache
    ],
)
def test_the_images_weights_step(tiny_checkpoint, variant, ids, fetched):
    # The step as `docker build` runs it (ARGs are its environment), with this machine's Python
    # and the tests' offline Hugging Face cache: the proxy variant must not run it at all.
    environ = {**os.environ, "VARIANT": variant, "SAM2_MODEL_IDS": ids}
    command = _dockerfile_run("hf_hub_download")
    run = subprocess.run(["sh", "-c", command], env=environ, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    if not fetched:
        assert run.returncode == 0 and "SAM2_MODEL_IDS ignored" in run.stdout
    elif "tiny" in ids:
        assert run.returncode == 0, run.stderr
    else:
        assert run.returncode != 0 and "offline" in run.stderr.lower(), run.stderr
