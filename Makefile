# The index of everything a person runs. `make demo` and `make test` set themselves up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint format bench up down clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)  ## run the example workflow on the embedded PostgreSQL
	$(BIN)/stepline demo

test: $(STAMP)  ## the whole test suite on a real PostgreSQL
	$(BIN)/python -m pytest

lint: $(STAMP)  ## ruff + mypy (strict)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)  ## benchmarks, printed as ratios against raw psycopg (and DBOS) in the same run
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench.appends
	$(BIN)/python -m bench.step_overhead
	$(BIN)/python -m bench.api
	$(BIN)/python -m bench.rebuild
	$(BIN)/python -m bench.workers
	$(BIN)/python -m bench.session_size

up:  ## PostgreSQL in Docker, for those who prefer it to the embedded server
	docker compose up -d --wait postgres

down:
	docker compose down

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
