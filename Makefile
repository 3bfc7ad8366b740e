# Two entry points for a fresh machine: `make demo` and `make test` (both set everything up first).
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp

.PHONY: setup demo demo-synthetic test lint

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install --upgrade pip
	$(VPY) -m pip install "torch==2.14.1" "torchvision==0.29.1" || $(VPY) -m pip install "torch>=2.4" torchvision
	$(VPY) -m pip install -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# The head CT bundle end to end on phantom CT, offline (docs/getting_started.md): ~2 min on 2 busy CPU cores.
demo: $(STAMP)
	$(VENV)/bin/monai-ng demo --out outputs/demo

# The synthetic-embedding experiment (no images, no encoder).
demo-synthetic: $(STAMP)
	$(VENV)/bin/monai-ng demo --synthetic --out outputs/demo-synthetic

test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(VPY) -m pytest -n 2 -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff format --check monai_ng preprocessing benchmarks tests && $(VENV)/bin/ruff check .
