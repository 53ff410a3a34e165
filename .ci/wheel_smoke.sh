#!/usr/bin/env bash
# The wheel, outside the tree: `pip wheel` against .venv's torch (make install first), installed with its
# dependencies (no extras) into a clean venv with the pinned torch, then .ci/wheel_smoke.py from a temporary
# directory, so that a file missing from the wheel cannot hide behind the editable install.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
PYTHON=${PYTHON:-python3}
constraints=$root/requirements/constraints.txt
torch_pin=$(sed -n 's/^\(torch==[^ ]*\).*/\1/p' "$constraints")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$SECONDS

.venv/bin/python -m pip wheel -q --no-build-isolation --no-deps -w "$work/dist" .
wheel=$(echo "$work"/dist/neuralgrok-*.whl)
echo "built $(basename "$wheel") in $((SECONDS - start)) s:"
.venv/bin/python -m zipfile -l "$wheel" | awk 'NR > 1 { print "  " $1 }'

"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --no-compile -c "$constraints" "$torch_pin"
"$work/venv/bin/python" -m pip install -q --no-compile -c "$constraints" "$wheel"
echo "installed it with $torch_pin into a clean venv at $((SECONDS - start)) s"

cp .ci/wheel_smoke.py "$work/"
cd "$work"
"$work/venv/bin/python" -I wheel_smoke.py "$root"
