"""``python -m neuralgrok ...``: the same as the ``neuralgrok`` command."""
import sys

from .cli import main

sys.exit(main())
