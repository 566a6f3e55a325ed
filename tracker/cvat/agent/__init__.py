"""The auto-annotation functions for cvat-cli's agent (`ai-models/*/func.py` creates them)."""
