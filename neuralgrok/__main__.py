"""``python -m neuralgrok ...``: the same as the ``neuralgrok`` command."""
import sys

from .experiments.cli import main

sys.exit(main())
