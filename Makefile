# The README's two commands, `make demo` and `make test`, each do the whole set-up on a fresh
# Debian 12 machine: Debian packages (as root), a venv that sees them, the build, then the job.
# Both are idempotent; the C++ is rebuilt only when a file it depends on changed.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.neuralgrok-installed
DEB_PACKAGES := g++ cmake ninja-build python3-dev python3-venv python3-pip pybind11-dev \
	python3-torch libtorch-dev libopenblas0-pthread python3-numpy python3-tqdm python3-matplotlib \
	python3-pandas python3-pytest python3-hypothesis python3-nbclient python3-nbconvert \
	python3-ipykernel python3-torchvision python3-pil
BUILD_INPUTS := CMakeLists.txt setup.py pyproject.toml $(shell find csrc -name '*.cpp' -o -name '*.h')

.PHONY: deps install test demo bench notebooks strip-notebooks clean

deps:
	@missing=$$(for p in $(DEB_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed$$' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "Installing Debian packages: $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "neuralgrok needs Debian packages that are not installed. Run as root:"; \
	    echo "  apt-get update && apt-get install -y" $$missing; \
	    exit 1; \
	  fi; \
	fi

$(PY):
	/usr/bin/python3 -m venv --system-site-packages $(VENV)

$(STAMP): $(BUILD_INPUTS) | $(PY)
	$(PY) -m pip install --no-index --no-build-isolation -e . -q
	@touch $@

install: deps $(STAMP)

test: install
	$(PY) -m pytest -q

demo: install
	$(VENV)/bin/neuralgrok demo --out runs/demo

bench: install
	$(PY) bench/bench_age.py
	$(PY) bench/bench_amplifier.py
	$(PY) bench/bench_neuralgrok.py
	$(PY) bench/bench_measures.py
	$(PY) bench/bench_polygons.py

# Every notebook headless, reading the committed results/ (NEURALGROK_QUICK=1 make notebooks: tiny live runs,
# as the test suite does); the executed copies, with figures, go to runs/notebooks/.
notebooks: install
	$(PY) notebooks/nbtool.py run notebooks/*.ipynb --out runs/notebooks $(if $(filter 1,$(NEURALGROK_QUICK)),--quick)

strip-notebooks: install
	$(PY) notebooks/nbtool.py strip notebooks/*.ipynb

clean:
	rm -rf build $(VENV) neuralgrok/_C*.so neuralgrok/_build_info.json
