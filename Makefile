# Two entry points: `make demo` (the main job) and `make test` (the whole test suite).
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
	$(PIP) install -e . 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import eahlib, transformers, nbval, papermill"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) -m eahlib.demo --figures figures

test: setup
	$(PY) -m pytest -q -p no:cacheprovider

benchmark: setup
	$(PY) benchmarks/bench_core.py
	$(PY) benchmarks/bench_methods.py

clean:
	rm -rf $(VENV) *.egg-info
