# Two entry points (see README): `make run` starts the bot, `make test` runs every test.
# Both create .venv on first use, with torch installed first from PyTorch's index for the build:
# the CPU build where no NVIDIA GPU is found, CUDA 12.8 where `nvidia-smi` is; choose with
# `make run TORCH_BUILD=cu128` (or cu126, cpu, ...). A torch already in .venv is left alone.
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
TORCH_BUILD ?= $(if $(shell command -v nvidia-smi 2>/dev/null),cu128,cpu)
TORCH_INDEX ?= https://download.pytorch.org/whl/$(TORCH_BUILD)
# The local version label (+cpu) makes pip take that build and nothing else: the plain torch on
# the default index is a CUDA build, several GB. PyTorch's index is an *extra* index, so pip's
# configured index (or mirror) still serves torch's own dependencies; one retry keeps an offline
# or firewalled PyTorch index from stalling the install.
TORCH ?= torch==$(TORCH_VERSION)+$(TORCH_BUILD)
BIN := $(VENV)/bin

.PHONY: run test install install-test lint test-servers

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, pinned, so nothing later pulls a CUDA build as a dependency.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || \
	  $(BIN)/pip install -q --retries 1 --extra-index-url "$(TORCH_INDEX)" "$(TORCH)"
	$(BIN)/pip install -q -e ".[render]"
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
	$(BIN)/hadolint Dockerfile
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml

# The tests start private Redis and PostgreSQL servers from the installed binaries (or use
# LMD_TEST_REDIS_URL / LMD_TEST_POSTGRES_URL). Install them where they are missing and we can.
test-servers:
	@if command -v redis-server >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server postgresql >/dev/null; \
	else echo "The tests need redis-server and PostgreSQL: install them (Debian/Ubuntu: sudo apt-get install redis-server postgresql)" >&2; exit 1; fi

# The Dockerfile and compose checks run inside pytest (tests/test_deploy.py).
test: install-test test-servers
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)
