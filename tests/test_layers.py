"""The layers the folder names promise: entry points -> CVAT adapters -> engine -> sam2, each
importing only the one below it (and itself), never back up; development tools out of production.

Read from the source (every `import`, also inside functions), so an import added anywhere that
runs against the layers fails here before it can tangle them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: What each layer may import of this project; anything not listed is refused.
ALLOWED = {
    "tracker.engine": {"tracker.engine"},
    "tracker.cvat": {"tracker.cvat", "tracker.engine"},
    "tracker.serve": {"tracker.serve", "tracker.cvat"},
    "tracker.cli": {"tracker.cli", "tracker.cvat", "tracker.serve"},
    "ai-models": {"tracker.cvat"},
    "serverless": {"tracker.cvat"},
}


def _layer(path: Path) -> str | None:
    """The layer of a source file; None for development tools (`tracker/devtools`: tests and
    benchmarks use them, and production code must not: no layer allows them)."""
    parts = path.relative_to(ROOT).parts
    layer = f"tracker.{parts[1]}" if parts[0] == "tracker" and len(parts) > 2 else parts[0]
    return layer if layer in ALLOWED else None


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return [name for name in names if name == "tracker" or name.startswith("tracker.")]


SOURCES = sorted(
    path
    for folder in ("tracker", "ai-models", "serverless")
    for path in (ROOT / folder).rglob("*.py")
    if _layer(path) is not None
)


def test_every_layer_has_sources():
    assert {_layer(path) for path in SOURCES} == set(ALLOWED)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_run_down_the_layers(path):
    allowed = ALLOWED[_layer(path)]
    wrong = [
        name
        for name in _imports(path)
        if not any(name == layer or name.startswith(layer + ".") for layer in allowed)
    ]
    assert not wrong, f"{_layer(path)} may import only {sorted(allowed)}"
