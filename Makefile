# Two entry points: `make demo` (the main job: every notebook in small mode, writing figures/ and
# data/results/) and `make test` (unit tests + every notebook under nbval, small mode).
# Each creates or reuses its own virtual environment in $(VENV) and installs the CPU build of
# torch unless torch is already importable there.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
SHARED ?= ../shared
PIP := $(PY) -m pip --disable-pip-version-check -q

# Offline reference data for tests (see ../shared/README.md); real users download on demand.
export NLTK_DATA ?= $(abspath $(SHARED)/nltk_data)
export EAH_DATA_DIR ?= $(abspath $(SHARED)/eah-data)
export EAH_OFFLINE ?= 1

.PHONY: demo test setup clean benchmark

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH_SPEC)" 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import torch"
	$(PIP) install -e ".[all]" 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import eahlib, transformers, nbval, papermill"
	touch $@

setup: $(VENV)/.installed

NBVAL := --nbval-lax --nbval-current-env --nbval-cell-timeout=900

demo: setup
	$(PY) -m eahlib.notebook_runner --mode small

test: setup
	$(PY) -m pytest -q -p no:cacheprovider tests notebooks $(NBVAL)

benchmark: setup
	$(PY) benchmarks/bench_core.py
	$(PY) benchmarks/bench_methods.py

clean:
	rm -rf $(VENV) *.egg-info
