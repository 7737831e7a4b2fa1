# Everything runs from the virtual environment in .venv, which the first
# target that needs it creates.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
MAKEFLAGS += --no-print-directory

.PHONY: example build venv test test-unit protos check-protos modules lint clean

# Set up from a fresh clone and run the original driver's example job, with
# the plugin executable that a Nomad plugin_dir would hold.
example: build
	@$(BIN)/wasmtime-driver run --plugin build/wasmtime-driver example/job/sum.nomad

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]' 1>&2
	@touch $@

# build/wasmtime-driver is the one file a Nomad plugin_dir needs: a wrapper
# that runs the driver from this checkout's virtual environment.
build: venv
	@mkdir -p build
	@printf '%s\n' '#!/bin/sh' \
	  '# Nomad starts this file from its plugin_dir. It runs the driver from' \
	  '# the virtual environment of the checkout that built it.' \
	  'exec "$(abspath $(BIN))/python" -m wasmtime_driver "$$@"' \
	  > build/wasmtime-driver
	@chmod 0755 build/wasmtime-driver

test: build
	$(BIN)/pytest

# The unit and integration tests without the Go conformance suite.
test-unit: build
	$(BIN)/pytest -m "not conformance"

protos: venv
	$(BIN)/python scripts/generate_protos.py

check-protos: venv
	$(BIN)/python scripts/generate_protos.py --check

modules:
	$(MAKE) -C example/wasm-modules

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src

clean:
	rm -rf build
