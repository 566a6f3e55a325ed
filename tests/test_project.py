"""The project's own rules: CI runs the README's commands, and the code is ruff clean."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"<!-- (setup|test) -->\s*```(?:bash|sh)?\n(.*?)\n```", text, re.S)
    return [command.strip() for _, command in blocks]


def test_ci_runs_exactly_the_readme_commands():
    commands = _readme_commands()
    assert len(commands) == 2
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    for command in commands:
        assert command in ci_lines


def test_every_set_up_path_installs_what_the_tests_import():
    """The CPU-only set-up must pass the same test command as the default one."""
    text = (ROOT / "README.md").read_text()
    installs = [
        set(extras.split(",")) for extras in re.findall(r'pip install -e "\.\[([^\]]*)\]"', text)
    ]
    for_tests = [extras for extras in installs if "test" in extras]
    assert len(for_tests) >= 2, "the default and the CPU-only set-up"
    assert all(extras == {"test", "server"} for extras in for_tests), for_tests


def test_code_is_ruff_clean():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_benchmark_imports_the_package_not_the_tests():
    source = (ROOT / "benchmarks" / "compare_with_upstream.py").read_text()
    assert "sys.path" not in source
    code = "import tracker.devtools.agent_worker, tracker.devtools.checkpoints, "
    code += "tracker.devtools.cvat_standin, tracker.devtools.synthetic"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
