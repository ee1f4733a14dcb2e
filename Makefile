# `make run`: set up .venv and run the main job on the embedded defaults.
# `make test`: set up .venv with the test extras and run the whole test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.relied-installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/relied simulate --city aguascalientes --agents 100 --policy congestion-aware --seed 0

test: $(STAMP)
	NUMBA_DISABLE_JIT=1 MPLBACKEND=Agg $(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check relied tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/env_throughput.py

clean:
	rm -rf $(VENV) runs
