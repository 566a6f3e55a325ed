"""`python -m tracker` is the `sam2-tracker` command."""

import sys

from tracker.cli import main

sys.exit(main())
