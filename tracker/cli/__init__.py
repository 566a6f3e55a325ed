"""`sam2-tracker`: the command line, an entry point on top of `tracker.cvat`."""
