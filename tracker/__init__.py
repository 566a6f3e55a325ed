"""SAM2 video tracking for CVAT: entry points, CVAT adapters and the engine (see the README).

Importing the package sets `OMP_WAIT_POLICY=PASSIVE` unless it is set already or PyTorch is
loaded already: OpenMP (PyTorch's CPU threads) reads it once, when PyTorch loads it. With
libgomp's default each thread spins a while before it sleeps when it waits for the others, and
on cores shared with other work (a CVAT host's server, workers and database) the spinning
threads take the cores from the ones they wait for: frames took several times as long
(benchmarks/cpu_contention.py, its results in benchmarks/results). Set `OMP_WAIT_POLICY=ACTIVE`
(or leave it empty for libgomp's default, faster on idle cores) on cores of the tracker's own.
"""

import os as _os
import sys as _sys

if "torch" not in _sys.modules:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
