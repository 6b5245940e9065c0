# The index of everything a person runs. `make demo` and `make test` set themselves up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test redteam lint format bench up down clean chromium bubblewrap

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP) chromium bubblewrap  ## the example workflows (HTTP, browser, MCP) on the embedded PostgreSQL
	$(BIN)/stepline demo
	$(BIN)/stepline demo --workflow examples/todo-browser.yaml
	STEPLINE_SHELL_ALLOW='["python"]' STEPLINE_MCP_PATHS='["$(CURDIR)/examples"]' \
	  $(BIN)/stepline demo --workflow examples/todo-mcp.yaml

test: $(STAMP) chromium bubblewrap  ## the whole test suite on a real PostgreSQL
	$(BIN)/python -m pytest

redteam: $(STAMP) chromium bubblewrap  ## the attacks on the tenant boundary alone (tests/redteam)
	$(BIN)/python -m pytest tests/redteam

# The browser executor drives the system's Chromium, never a downloaded build: found on PATH or
# at STEPLINE_BROWSER_PATH, else installed with apt-get when run as root, else one line saying how.
chromium:
	@if [ -n "$$STEPLINE_BROWSER_PATH" ]; then \
	  test -x "$$STEPLINE_BROWSER_PATH" || { echo "STEPLINE_BROWSER_PATH=$$STEPLINE_BROWSER_PATH is not an executable" >&2; exit 1; }; \
	elif command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Installing Chromium for the browser executor: apt-get install -y chromium"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
	  echo "The browser executor needs Chromium: install it (Debian/Ubuntu: sudo apt-get install -y chromium) or set STEPLINE_BROWSER_PATH" >&2; exit 1; \
	fi

# Every shell command runs jailed by bubblewrap, and without it none runs: found on PATH or at
# STEPLINE_BWRAP_PATH, else installed with apt-get when run as root, else one line saying how.
bubblewrap:
	@if [ -n "$$STEPLINE_BWRAP_PATH" ]; then \
	  test -x "$$STEPLINE_BWRAP_PATH" || { echo "STEPLINE_BWRAP_PATH=$$STEPLINE_BWRAP_PATH is not an executable" >&2; exit 1; }; \
	elif command -v bwrap >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Installing bubblewrap for the shell executor: apt-get install -y bubblewrap"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; \
	else \
	  echo "The shell executor needs bubblewrap: install it (Debian/Ubuntu: sudo apt-get install -y bubblewrap) or set STEPLINE_BWRAP_PATH" >&2; exit 1; \
	fi

lint: $(STAMP)  ## ruff + mypy (strict)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP) chromium bubblewrap  ## benchmarks, printed as ratios against raw psycopg (and DBOS) in the same run
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench.appends
	$(BIN)/python -m bench.step_overhead
	$(BIN)/python -m bench.api
	$(BIN)/python -m bench.stream
	$(BIN)/python -m bench.stream --subscribers 1000
	$(BIN)/python -m bench.stream_floor --subscribers 1000
	$(BIN)/python -m bench.rebuild
	$(BIN)/python -m bench.projector_batches
	$(BIN)/python -m bench.workers
	$(BIN)/python -m bench.e2e
	$(BIN)/python -m bench.session_size
	$(BIN)/python -m bench.browser
	$(BIN)/python -m bench.replay
	$(BIN)/python -m bench.learned
	$(BIN)/python -m bench.verify

up:  ## PostgreSQL in Docker, for those who prefer it to the embedded server
	docker compose up -d --wait postgres

down:
	docker compose down

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
