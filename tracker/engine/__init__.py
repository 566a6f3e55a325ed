"""The engine: SAM2 on streamed frames and single images, with no knowledge of CVAT.

Only `sam2` and PyTorch lie below it; `tracker.cvat` adapts it to CVAT's protocols.
"""
