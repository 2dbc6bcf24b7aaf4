# The two commands of the README: `make run` and `make test`.
# Both create the virtual environment in .venv when it is missing and
# (re)install the project when pyproject.toml changed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench bench-large clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/pricecast run --source demo

# The tests run in one process more than there are cores (pytest-xdist), taking work
# from each other as they go: many wait on a subprocess, a server or a database part of
# the time. On two idle cores: 8 min 19 s with 2 processes, 7 min 22 s with 3 (2026-12-01).
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))

test: $(STAMP) lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal

lint: $(STAMP)
	$(BIN)/ruff check pipeline flows deployments tests benchmarks

# Benchmarks print a table and write JSON under benchmarks/results/.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.upsert_prices
	$(BIN)/python -m benchmarks.end_to_end
	$(BIN)/python -m benchmarks.train_memory
	$(BIN)/python -m benchmarks.intervals

# Issue 14's large universes end to end, the tutorial's loop on 20 tickers of
# each, extrapolated, then the next trading days as commands until one fine-tunes:
# about 7 minutes at 1,000 tickers and 22 at 5,000 on two cores, 5.4 GiB of memory
# at most (benchmarks/README.md, "1,000 and 5,000 tickers x 10 years").
bench-large: $(STAMP)
	$(BIN)/python -m benchmarks.end_to_end --tickers 1000 --years 10 --tutorial-sample 20 --json benchmarks/results/end_to_end_1000.json
	$(BIN)/python -m benchmarks.end_to_end --tickers 5000 --years 10 --tutorial-sample 20 --json benchmarks/results/end_to_end_5000.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
