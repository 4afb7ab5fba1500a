# Two entry points (see README): `make run` starts the bot, `make test` runs every test.
# Both create .venv on first use. TORCH pins the CPU build here; on a GPU machine install the
# CUDA build of torch into .venv first (README, "Running on a GPU") and it is left alone.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: run test install install-test lint

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

test: install-test
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)
