# Two entry points (see README): `make run` starts the bot, `make test` runs every test.
# Both create .venv on first use. TORCH pins the CPU build here; on a GPU machine install the
# CUDA build of torch into .venv first (README, "Running on a GPU") and it is left alone.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: run test install install-test lint test-servers

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, pinned, so nothing later pulls a CUDA build as a dependency.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

run: install
	$(BIN)/python bot.py

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check . || true

# The tests start private Redis and PostgreSQL servers from the installed binaries (or use
# LMD_TEST_REDIS_URL / LMD_TEST_POSTGRES_URL). Install them where they are missing and we can.
test-servers:
	@if command -v redis-server >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server postgresql >/dev/null; \
	else echo "The tests need redis-server and PostgreSQL: install them (Debian/Ubuntu: sudo apt-get install redis-server postgresql)" >&2; exit 1; fi

test: install-test test-servers
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)
