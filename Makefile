# Two commands set up and use everything on a fresh machine with Python 3.11:
#   make run    serve the API on http://127.0.0.1:8000 (embedded PostgreSQL unless DATABASE_URL is set)
#   make test   run the whole suite against a real throwaway PostgreSQL
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint fmt chaos fuzz bench clean .venv

# The stamp tracks the inputs, so editing pyproject.toml or the lock reinstalls.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(STAMP)

.venv: $(STAMP)

run: $(STAMP)
	$(BIN)/tickets serve

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Heavy drills: each is the long version of something the suite runs lightly.
chaos: $(STAMP)
	CHAOS_REPEAT=20 $(BIN)/python -m pytest tests/faults -m "" -q

fuzz: $(STAMP)
	FUZZ_LONG=1 HYPOTHESIS_PROFILE=long $(BIN)/python -m pytest tests/unit/test_core_stateful.py tests/api/test_schemathesis.py -q

bench: $(STAMP)
	bash bench/run.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
