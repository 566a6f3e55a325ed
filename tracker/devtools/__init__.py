"""Developer tools, not used by the tracker itself: random-weight SAM2 checkpoints in an offline
Hugging Face cache (`checkpoints`), synthetic videos (`synthetic`), a driver that calls a function
as cvat-cli's agent worker does (`agent_worker`) and a stand-in CVAT server for the real cvat-cli
(`cvat_standin`, also runnable by hand: `python -m tracker.devtools.cvat_standin --help`).

The tests and `benchmarks/compare_with_upstream.py` import them from here. They sit on top of the
layers (they may use `tracker.cvat` and cvat-cli's internals); nothing in the tracker imports them.
"""
