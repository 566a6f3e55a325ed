"""Where a benchmark's figures go: benchmarks/results/NAME.json (the data) and NAME.txt (the
table a reader compares), written together so that they always describe the same run."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def record(name: str | None, data: object, lines: list[str]) -> None:
    """Print the table; with a name, keep it and the data under benchmarks/results."""
    print("\n".join(lines))
    if name:
        (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")
        (RESULTS / f"{name}.txt").write_text("\n".join(lines) + "\n")
