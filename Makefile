# Two entry points for a fresh machine: `make demo` and `make test` (both set everything up first).
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp

.PHONY: setup demo demo-synthetic test lint results results-quick

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

# Regenerate docs/results.md and docs/figures/ (benchmarks/results.py, main tables + the variants past the paper;
# about 2 hours on 2 cores, resumable in OUT; on a busy machine add --threads 1).
RESULTS_OUT ?= outputs/results
results: $(STAMP)
	$(VPY) benchmarks/results.py --out $(RESULTS_OUT) --profile full --beyond --write-docs

# The same pipeline at smoke-test sizes, into outputs/results-quick (docs untouched).
results-quick: $(STAMP)
	$(VPY) benchmarks/results.py --out outputs/results-quick --profile quick

test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(VPY) -m pytest -n 2 -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff format --check monai_ng preprocessing benchmarks tests && $(VENV)/bin/ruff check .
