# Quick start:  make run   (set up, build the demo bundle if missing, serve on :8000)
#               make test  (set up, lint, type-check, run the test suite)
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
BUNDLE  ?= artifacts/demo-bundle
DEMO_DATA ?= artifacts/demo-data
HOST    ?= 127.0.0.1
PORT    ?= 8000
export MICREC_THREADS ?= 2
export OMP_NUM_THREADS ?= 2
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

CLIP_VENV ?= .venv-clip
CLIP_PKGS := open-clip-torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 torchvision==0.15.2 \
             requests urllib3 charset-normalizer idna certifi

.PHONY: setup setup-dev system-deps run demo-bundle docs-check test test-fast test-slow test-clip lint format clean \
        bench-serve bench-train-speed

# torch first, from the local CPU wheel: anything that depends on torch would otherwise
# pull the registry's multi-GB CUDA build.
$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e .
	touch $@

# Test and lint tools on top (make run does not need them, so it does not wait for them).
$(BIN)/.dev-installed: $(BIN)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/.installed
setup-dev: $(BIN)/.dev-installed

# Servers the tests start themselves (a real redis-server) and the browser the console's
# tests drive (headless chromium; Playwright uses it, never downloads one). Installed with
# apt when missing.
system-deps:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server (apt)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; }
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium (apt)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

demo-bundle: setup
	@if [ -f $(BUNDLE)/manifest.json ]; then echo "using existing bundle $(BUNDLE)"; \
	else $(BIN)/micrec demo build --out $(BUNDLE); fi

run: demo-bundle
	MICREC_BUNDLE_PATH=$(BUNDLE) MICREC_ITEM_IMAGES_DIR=$(DEMO_DATA)/images MICREC_API_DOCS=true \
	  $(BIN)/micrec serve --host $(HOST) --port $(PORT)

lint: setup-dev
	$(BIN)/ruff check model app tests bench docs
	$(BIN)/ruff format --check model app tests bench docs
	$(BIN)/mypy model app bench docs/check_service_doc.py

format: setup-dev
	$(BIN)/ruff format model app tests bench
	$(BIN)/ruff check --fix model app tests bench

test: setup-dev system-deps lint
	$(BIN)/pytest -m "not slow" -q
	$(MAKE) test-clip

# The optional open_clip backend. `pip install micrec[clip]` would replace the CPU torch with
# torch 2.14.1 + CUDA, so its test runs in a side venv that reuses the main venv's packages
# (a .pth file) and adds open_clip with --no-deps. torchvision 0.15.2 is only imported for
# its Python transforms (its compiled ops do not load against torch 2.13; open_clip's
# preprocessing is reimplemented in model/encoders/clip.py).
$(CLIP_VENV)/.installed: $(BIN)/.installed
	$(PY) -m venv $(CLIP_VENV)
	$(BIN)/python -c "import site; print(site.getsitepackages()[0])" > "$$($(CLIP_VENV)/bin/python -c 'import site; print(site.getsitepackages()[0])')/_micrec_main.pth"
	$(CLIP_VENV)/bin/pip install -q --no-deps $(CLIP_PKGS)
	touch $@

test-clip: $(CLIP_VENV)/.installed
	MICREC_REQUIRE_CLIP=1 $(CLIP_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/model/encoders/test_clip_encoder.py \
		tests/app/test_clip_bundle.py

test-fast: setup-dev
	$(BIN)/pytest -m "not slow" -q -x

test-slow: setup-dev system-deps
	$(BIN)/pytest -m slow -q

# Benchmarks (docs/results/): the service under load, training speed.
$(BIN)/.bench-installed: $(BIN)/.dev-installed
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $@

# every curl example of docs/service.md against a fresh server on the demo bundle
docs-check: demo-bundle
	$(BIN)/python docs/check_service_doc.py

bench-serve: $(BIN)/.bench-installed system-deps demo-bundle
	$(BIN)/python bench/serve.py

bench-train-speed: $(BIN)/.bench-installed
	$(BIN)/python bench/train_speed.py

clean:
	rm -rf $(VENV) $(CLIP_VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
