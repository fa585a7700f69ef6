# Quick start:  make run   (set up, build the demo bundle if missing, serve on :8000)
#               make test  (set up, lint, type-check, run the test suite)
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
BUNDLE  ?= artifacts/demo-bundle
HOST    ?= 127.0.0.1
PORT    ?= 8000
export MICREC_THREADS ?= 2
export OMP_NUM_THREADS ?= 2
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup system-deps run demo-bundle test test-fast test-slow lint format clean

# torch first, from the local CPU wheel: anything that depends on torch would otherwise
# pull the registry's multi-GB CUDA build.
$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/.installed

# Servers the tests start themselves (a real redis-server). Installed with apt when missing.
system-deps:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server (apt)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; }

demo-bundle: setup
	@if [ -f $(BUNDLE)/manifest.json ]; then echo "using existing bundle $(BUNDLE)"; \
	else $(BIN)/micrec demo build --out $(BUNDLE); fi

run: demo-bundle
	MICREC_BUNDLE_PATH=$(BUNDLE) $(BIN)/micrec serve --host $(HOST) --port $(PORT)

lint: setup
	$(BIN)/ruff check model app tests bench
	$(BIN)/ruff format --check model app tests bench
	$(BIN)/mypy model app

format: setup
	$(BIN)/ruff format model app tests bench
	$(BIN)/ruff check --fix model app tests bench

test: setup system-deps lint
	$(BIN)/pytest -m "not slow" -q

test-fast: setup
	$(BIN)/pytest -m "not slow" -q -x

test-slow: setup system-deps
	$(BIN)/pytest -m slow -q

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
