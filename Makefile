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
	$(BIN)/pip install -q --prefer-binary --find-links $(CACHE)/wheels -e ".[host,dev]"
	touch $@

run: setup
	$(BIN)/ferrousforge serve --pull gemma3:270m

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
