# The README's two commands, `make demo` and `make test`, each do the whole set-up on a fresh machine: a venv
# (.venv) made with the first `python3` on PATH, torch pinned (requirements/constraints.txt) and every Python
# dependency from PyPI, the C++ core built against that torch, then the job. Both are idempotent and rebuild
# the C++ only when a file it depends on changed.
#
# `make test-debian` is the second CI leg, the oldest supported torch: Debian 12's python3-torch 1.13 and the
# other Debian packages (as root), a venv that sees them (.venv-debian), and the test suite, in a copy of the
# tree (build/debian-leg) so that its build never meets .venv's (both are CPython 3.11: an editable install puts
# _C.cpython-311-*.so and _build_info.json into neuralgrok/ of the tree it builds).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CONSTRAINTS := requirements/constraints.txt
# torch is installed first and pinned, always: an open torch requirement lets pip fetch a newer (CUDA) build.
TORCH_PIN := $(shell sed -n 's/^\(torch==[^ ]*\).*/\1/p' $(CONSTRAINTS))
# cmake and ninja come from PyPI (into the venv) only where the system has none.
BUILD_TOOLS := setuptools pybind11 $(if $(shell command -v cmake),,cmake) $(if $(shell command -v ninja),,ninja)
EXTRAS := dev
STAMP := $(VENV)/.neuralgrok-installed
BUILD_INPUTS := CMakeLists.txt setup.py pyproject.toml $(CONSTRAINTS) $(shell find csrc -name '*.cpp' -o -name '*.h')

DEB_VENV := .venv-debian
DEB_TREE := build/debian-leg
DEB_VENV_STAMP := $(DEB_VENV)/.created
# In the copy's build/, which the sync leaves alone: a new copy or a new venv means a new install.
DEB_STAMP := $(DEB_TREE)/build/.neuralgrok-installed
DEB_PACKAGES := g++ cmake ninja-build python3-dev python3-venv python3-pip pybind11-dev rsync \
	python3-torch libtorch-dev libopenblas0-pthread python3-numpy python3-tqdm python3-pandas python3-matplotlib \
	python3-pytest python3-hypothesis python3-scipy python3-nbformat python3-nbclient python3-ipykernel \
	python3-pil python3-torchvision

.PHONY: deps install test lint demo bench notebooks strip-notebooks wheel-smoke lock \
	deps-debian sync-debian-tree install-debian test-debian clean

# Only a C++ compiler is needed from the system (Python's headers come with it; the rest from PyPI).
# A .venv made by the older Makefile (on Debian's torch, seeing the system's packages) is replaced.
deps:
	@if ! command -v g++ > /dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++; \
	  else echo "neuralgrok needs a C++17 compiler. Run as root: apt-get install -y g++"; exit 1; fi; \
	fi
	@test -n "$(TORCH_PIN)" || { echo "no torch==VERSION line in $(CONSTRAINTS)"; exit 1; }
	@if grep -qs '^include-system-site-packages = true' $(VENV)/pyvenv.cfg; then \
	  echo "$(VENV) sees the system's packages (an older Makefile made it on Debian's torch): making it anew"; \
	  rm -rf $(VENV); \
	fi

$(PY):
	$(PYTHON) -m venv $(VENV)

# pip byte-compiles what it installs (about a minute of CPU for torch): where PYTHONDONTWRITEBYTECODE is set,
# as on the project's machines, modules are never cached when imported, and every process that reaches
# torch._dynamo (torch.optim imports it) then compiled some 800 files again: 7 of a tiny run's 12 seconds.
$(STAMP): $(BUILD_INPUTS) | $(PY)
	$(PIP) install -q -c $(CONSTRAINTS) "$(TORCH_PIN)" $(BUILD_TOOLS)
	$(PIP) install -q -c $(CONSTRAINTS) --no-build-isolation -e ".[$(EXTRAS)]"
	@touch $@

install: deps $(STAMP)

test: install
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .

demo: install
	$(VENV)/bin/neuralgrok demo --out runs/demo --overwrite  # the demo is made anew each time

# A wheel, installed into a clean venv and run from outside the tree (.ci/wheel_smoke.sh).
wheel-smoke: install
	PYTHON=$(PYTHON) bash .ci/wheel_smoke.sh

# Rewrite the constraints from what .venv holds now (after `pip install -U ...` there, say).
lock: install
	{ sed -n '1,/^$$/p' $(CONSTRAINTS); $(PIP) freeze --all --exclude-editable | grep -v -e '^neuralgrok' -e '^pip==' | sed 's/^\(torch==[^+]*\)+.*/\1/'; } \
	  > $(CONSTRAINTS).new && mv $(CONSTRAINTS).new $(CONSTRAINTS)

# The table of BENCHMARKS.md's first section first (NeuralGrok's Table 1 settings), then the rest.
bench: install
	$(PY) bench/paper_step.py
	$(PY) bench/bench_age.py
	$(PY) bench/bench_amplifier.py
	$(PY) bench/bench_neuralgrok.py
	$(PY) bench/bench_measures.py
	$(PY) bench/bench_polygons.py
	$(PY) bench/sweep_throughput.py
	$(PY) bench/gu_step.py

# Every notebook headless, reading the committed results/ (NEURALGROK_QUICK=1 make notebooks: tiny live runs,
# as the test suite does); the executed copies, with figures, go to runs/notebooks/.
notebooks: install
	$(PY) notebooks/nbtool.py run notebooks/*.ipynb --out runs/notebooks $(if $(filter 1,$(NEURALGROK_QUICK)),--quick)

strip-notebooks: install
	$(PY) notebooks/nbtool.py strip notebooks/*.ipynb

# ---- the Debian leg: torch 1.13 and every Python package from Debian 12 (setuptools from PyPI: see below)
deps-debian:
	@missing=$$(for p in $(DEB_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed$$' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "Installing Debian packages: $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing > /dev/null; \
	  else \
	    echo "The Debian leg needs Debian packages that are not installed. Run as root:"; \
	    echo "  apt-get update && apt-get install -y" $$missing; \
	    exit 1; \
	  fi; \
	fi

# The build reads pyproject's SPDX license, which needs setuptools >= 77 and packaging >= 24.2 (Debian 12 has 66
# and 23): those two come from PyPI, pinned; torch, pybind11 and every runtime and test dependency are Debian's
# (the install below is --no-index).
$(DEB_VENV_STAMP):
	/usr/bin/python3 -m venv --system-site-packages $(DEB_VENV)
	$(DEB_VENV)/bin/python -m pip install -q --no-compile -c $(CONSTRAINTS) setuptools packaging
	@touch $@

# The tree, tracked and untracked files alike, less what .gitignore names; the copy's own build products
# (build/, neuralgrok/_C*.so, ...) are ignored too, so they survive and rebuilds stay incremental.
sync-debian-tree:
	@mkdir -p $(DEB_TREE)
	rsync -a --delete --filter=':- .gitignore' --exclude=/.git ./ $(DEB_TREE)/

$(DEB_STAMP): $(BUILD_INPUTS) $(DEB_VENV_STAMP) | sync-debian-tree
	cd $(DEB_TREE) && $(abspath $(DEB_VENV))/bin/python -m pip install -q --no-index --no-build-isolation -e .
	@touch $@

install-debian: deps-debian $(DEB_VENV_STAMP) sync-debian-tree $(DEB_STAMP)

test-debian: install-debian
	cd $(DEB_TREE) && $(abspath $(DEB_VENV))/bin/python -m pytest

clean:
	rm -rf build $(VENV) $(DEB_VENV) neuralgrok/_C*.so neuralgrok/_build_info.json
