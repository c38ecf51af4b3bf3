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

# ../shared is the project's optional offline mirror of the public reference data (it exists only on
# our own machines and in CI). Used only when present, and never over a variable you have set.
# Without it, NLTK data comes from NLTK's standard locations (downloaded when missing) and registry
# files are downloaded and sha256-verified into the cache; or point NLTK_DATA and EAH_DATA_DIR at
# your own copies.
ifneq ($(wildcard $(SHARED)/eah-data),)
export NLTK_DATA ?= $(abspath $(SHARED)/nltk_data)
export EAH_DATA_DIR ?= $(abspath $(SHARED)/eah-data)
export EAH_OFFLINE ?= 1
endif

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
