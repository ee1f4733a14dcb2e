# `make run`: set up .venv and run the main job on the embedded defaults.
# `make test`: set up .venv with the test extras and run the whole test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.relied-installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

RUN := runs/aguascalientes/reled/0
run: $(STAMP)
	$(VENV)/bin/relied train --preset aguascalientes-peak --algo reled --experts offline \
		--demo-scenarios 2 --steps 30000 --seed 0 --bound-every 10
	$(VENV)/bin/relied eval $(RUN) --seeds 1000,1001
	$(VENV)/bin/relied eval $(RUN) --city monaco --seeds 1000,1001
	@echo "Plots and logs: $$(ls -dt $(RUN)/*/ | head -1) (learning_curve.png, routes.png, metrics.csv, tb/)"

test: $(STAMP)
	NUMBA_DISABLE_JIT=1 MPLBACKEND=Agg $(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check relied tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/env_throughput.py

clean:
	rm -rf $(VENV) runs
