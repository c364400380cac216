# The README's quickstart: `make run` starts the whole system, `make test` runs every check.
# Each target does its own set-up (virtualenv, install) so a fresh clone needs nothing else.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/jobhost dev

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy host webhooks

pytest: $(STAMP)
	$(BIN)/pytest -q $(PYTEST_ARGS)

# The benchmark's own dependencies: the peers (the `bench` extra, arq apart: see pyproject.toml)
# and BullMQ's npm project. BENCH_ARGS passes flags, e.g. BENCH_ARGS='--systems jobhost,bullmq'.
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) pyproject.toml bench/bullmq/package-lock.json
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/pip install --quiet --no-deps arq==0.28.0
	cd bench/bullmq && npm ci --no-audit --no-fund --silent
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.drain $(BENCH_ARGS)
	$(BIN)/python -m bench.http_enqueue

clean:
	rm -rf $(VENV) .jobhost .mypy_cache .ruff_cache .pytest_cache
