# The two commands of the README: `make run` and `make test`.
# Both create the virtual environment in .venv when it is missing and
# (re)install the project when pyproject.toml changed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/pricecast run --source demo

# The tests run on every core (pytest-xdist), taking work from each other as they go.
test: $(STAMP) lint
	$(BIN)/python -m pytest -n auto --dist worksteal

lint: $(STAMP)
	$(BIN)/ruff check pipeline flows deployments tests benchmarks

# Benchmarks print a table and write JSON under benchmarks/results/.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.upsert_prices
	$(BIN)/python -m benchmarks.end_to_end
	$(BIN)/python -m benchmarks.train_memory
	$(BIN)/python -m benchmarks.intervals

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
