#!/usr/bin/env bash
# Run sweep files from a git worktree pinned at one commit, so that work in this checkout cannot change
# a sweep that runs for hours (or across sessions); two runs at a time, one thread each, in the
# background. Its runs/ live in the worktree and resume where they stopped when the same command is
# given again. Export the runs finished so far to this checkout's results/ with --export.
#   bench/pinned_sweep.sh COMMIT configs/sweep-neuralgrok-table1.toml ...     # start or resume (background)
#   bench/pinned_sweep.sh COMMIT --export configs/sweep-neuralgrok-table1.toml ...   # copy finished runs
# (MAX_ROWS=N caps each copy's metrics.csv at N rows instead of the export's default 200 log-spaced ones.)
# A session's machine may be replaced between sessions, worktree and runs/ with it; only what is
# committed survives. --park copies the unfinished runs that have a checkpoint (their whole directory
# but the previous checkpoint) to this checkout's parked/<sweep>/, dropping parked runs that have
# finished since: commit parked/ before a session ends. A run whose checkpoint is over PARK_MAX_MB (default 50)
# is left out, with a message: it restarts from step 0 on a new machine. --unpark, on a new machine before the sweep
# starts, puts the committed results/<sweep>/ runs (finished: the sweep skips them) and the parked
# runs (they resume from their checkpoints) into the worktree's runs/, where a run is not there yet.
#   bench/pinned_sweep.sh COMMIT --park configs/sweep-neuralgrok-table1.toml ...     # then git add parked/
#   bench/pinned_sweep.sh COMMIT --unpark configs/sweep-neuralgrok-table1.toml ...   # then start as above
# Worktree: ../sweep-COMMIT beside this checkout; venv: ../venv-sweep-COMMIT (torch pinned as in the Makefile).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then echo "usage: $0 COMMIT [--export | --park | --unpark] SWEEP.toml ..." >&2; exit 2; fi
commit=$(git rev-parse --short=12 "$1"); shift
tree=$(cd .. && pwd)/sweep-$commit
venv=$(cd .. && pwd)/venv-sweep-$commit
if [ ! -d "$tree" ]; then git worktree add --detach "$tree" "$commit"; fi
if [ ! -x "$venv/bin/neuralgrok" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch==2.13.0 numpy tqdm matplotlib pandas pybind11 cmake ninja setuptools wheel
  (cd "$tree" && "$venv/bin/pip" install -q --no-build-isolation --no-deps -e .)
fi
# The extension must link the venv's torch only (a commit before 33fc64c could pick up a system libtorch,
# e.g. Debian's libtorch-dev, beside it: two c10s, ops without autograd).
if ldd "$tree"/neuralgrok/_C*.so | grep -E 'lib(c10|torch)[^ ]* => ' | grep -v "$venv" >&2; then
  echo "$tree's extension links a torch library outside $venv (above); rebuild it from a fixed commit" >&2
  exit 1
fi
sweep_dir() {
  # Where the pinned commit puts a sweep file's runs: out relative to the sweep file (sweep_out: in
  # neuralgrok.experiments.sweeps, or neuralgrok.sweep before the package was laid out by concept), or,
  # before sweep_out existed, to the worktree. Run from the worktree, so that its neuralgrok is the one imported.
  (cd "$tree" && "$venv/bin/python" -c '
import sys
from pathlib import Path
try:
    from neuralgrok.experiments.sweeps import sweep_out
except ImportError:
    try:
        from neuralgrok.sweep import sweep_out
    except ImportError:
        sweep_out = None
if sweep_out is None:
    from neuralgrok.files import read_toml
    print(Path.cwd() / read_toml(sys.argv[1])["out"])
else:
    print(Path(sweep_out(sys.argv[1])).resolve())' "$1")
}
mode=run
case "$1" in --export|--park|--unpark) mode=${1#--}; shift ;; esac
if [ "$mode" != run ]; then
  for sweep in "$@"; do
    out=$(sweep_dir "$sweep")
    name=$(basename "$out")
    case "$mode" in
    export)
      if [ -z "$(ls -A "$out" 2> /dev/null)" ]; then echo "$name: no runs yet"; continue; fi
      # From the worktree, so that the pinned commit's neuralgrok (not this checkout's) does the export: its
      # results module is neuralgrok.experiments.results, or neuralgrok.results in commits before that.
      dest=$(pwd)/results/$name
      results=neuralgrok.experiments.results
      (cd "$tree" && "$venv/bin/python" -c 'import neuralgrok.experiments.results' 2> /dev/null) || results=neuralgrok.results
      (cd "$tree" && "$venv/bin/python" -m "$results" export --finished-only ${MAX_ROWS:+--max-rows "$MAX_ROWS"} \
        "$out" "$dest") ;;
    park)
      mkdir -p "parked/$name"
      incoming=parked/$name/.incoming  # a run is copied here, then moved over its older parked copy
      for run in "$out"/*/; do
        run=${run%/} && base=$(basename "$run")
        if [ ! -f "$run/summary.json" ] && [ -f "$run/checkpoint.pt" ]; then
          size=$(du -m "$run/checkpoint.pt" | cut -f1)
          if [ "$size" -gt "${PARK_MAX_MB:-50}" ]; then  # e.g. Grokfast-MA's window of 100 gradients
            echo "not parked: $name/$base (its checkpoint is $size MB, over PARK_MAX_MB=${PARK_MAX_MB:-50}:" \
                 "too big to commit; on a new machine it starts again from step 0)" >&2
            continue
          fi
          rm -rf "$incoming" && mkdir -p "$incoming"
          cp -r "$run" "$incoming/"  # a copy taken mid-write is a run killed then: it resumes
          rm -f "$incoming/$base"/checkpoint.prev.pt "$incoming/$base"/.*.tmp
          rm -rf "parked/$name/$base" && mv "$incoming/$base" "parked/$name/"
          echo "parked $name/$base at step $(tail -n 1 "$run/metrics.csv" | cut -d, -f1)"
        fi
      done
      rm -rf "$incoming"
      for run in "parked/$name"/*/; do  # parked runs that have finished since
        run=${run%/} && base=$(basename "$run")
        [ -d "$run" ] || continue
        if [ -f "$out/$base/summary.json" ]; then rm -rf "$run"; echo "dropped parked $name/$base: it has finished"; fi
      done
      rmdir "parked/$name" 2> /dev/null || true ;;
    unpark)
      mkdir -p "$out"
      for run in results/"$name"/*/ parked/"$name"/*/; do
        run=${run%/}
        [ -d "$run" ] || continue
        if [ ! -e "$out/$(basename "$run")" ]; then cp -r "$run" "$out/" && echo "unparked $run"; fi
      done ;;
    esac
  done
  exit 0
fi
cd "$tree"
nohup "$venv/bin/neuralgrok" sweep "$@" --jobs "${JOBS:-2}" >> "sweep-$(date +%Y%m%d-%H%M%S).log" 2>&1 &
echo "sweep started in $tree (pid $!); log: $tree/sweep-*.log"
