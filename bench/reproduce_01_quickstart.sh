#!/usr/bin/env bash
# notebooks/01_quickstart.ipynb trains live (a hand-written AdamW loop, 3 x 4,000 steps, 3-5 minutes);
# it reads no committed results, so reproducing it is running it. The executed copy: runs/notebooks/.
set -euo pipefail
cd "$(dirname "$0")/.."
make install
.venv/bin/python notebooks/nbtool.py run notebooks/01_quickstart.ipynb --out runs/notebooks
