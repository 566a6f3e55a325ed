"""OpenMP's wait policy (tracker/__init__.py): every entry point's first import makes PyTorch's
CPU threads wait passively, unless the user chose a policy or PyTorch was loaded before.

OpenMP reports what it runs with when `OMP_DISPLAY_ENV=VERBOSE` (libgomp prints it on stderr
when PyTorch loads it), so these tests read what OpenMP itself took, in a fresh process. Its
policy line says PASSIVE for an unset policy too; the spin count tells them apart: 0 when
passive, 300000 for libgomp's default (spin, then sleep), 30000000000 when active.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent

LOAD_FILE = (
    "import importlib.util, sys; "
    "spec = importlib.util.spec_from_file_location('entry', sys.argv[1]); "
    "spec.loader.exec_module(importlib.util.module_from_spec(spec)); "
)
NUCLIO = ROOT / "serverless" / "sam2"
ENTRY_POINTS = {  # what each entry point's process imports first, and the file it loads
    "agent tracker": (LOAD_FILE, ROOT / "ai-models" / "tracker" / "sam2" / "func.py"),
    "agent interactor": (LOAD_FILE, ROOT / "ai-models" / "interactor" / "sam2" / "func.py"),
    "nuclio tracker": (LOAD_FILE, NUCLIO / "tracker" / "nuclio" / "main.py"),
    "nuclio interactor": (LOAD_FILE, NUCLIO / "interactor" / "nuclio" / "main.py"),
    "server": ("import tracker.serve.app; ", None),
    "command line": ("import tracker.cli.main; ", None),
}
THEN_TORCH = "import torch; torch.ones(64, 64) @ torch.ones(64, 64)"


def _spin_count(code: str, *args: str, **env: str) -> str:
    """How long OpenMP's threads spin before they sleep, running `code` in a fresh Python."""
    environ = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    environ.update(OMP_DISPLAY_ENV="VERBOSE", **env)
    run = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=environ,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    (line,) = [line for line in run.stderr.splitlines() if "GOMP_SPINCOUNT" in line]
    return line.split("=")[1].strip().strip("'")


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_every_entry_point_makes_openmp_wait_passively(entry):
    code, file = ENTRY_POINTS[entry]
    assert _spin_count(code + THEN_TORCH, *([str(file)] if file else [])) == "0"


def test_the_users_own_policy_is_kept():
    assert _spin_count("import tracker; " + THEN_TORCH, OMP_WAIT_POLICY="ACTIVE") == "30000000000"


def test_nothing_is_set_once_pytorch_is_loaded():
    """Too late for OpenMP: the package leaves the environment as it is (no false claim)."""
    code = THEN_TORCH + "; import os, tracker; assert 'OMP_WAIT_POLICY' not in os.environ"
    assert _spin_count(code) == "300000"  # libgomp's own default
