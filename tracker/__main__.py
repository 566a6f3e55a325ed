"""`python -m tracker` is the `sam2-tracker` command."""

import sys

from tracker.cli.main import main

sys.exit(main())
