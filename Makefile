# subnetscope developer tasks. `make demo` and `make test` work on a fresh machine (they set up .venv).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# the C sources of the optional extension subnetscope.kernels._native
CSRC := $(wildcard src/subnetscope/kernels/csrc/*.c src/subnetscope/kernels/csrc/*.h)
# CPU build of torch for development and CI; the package itself only asks for a range.
TORCH_PIN ?= torch==2.13.0

.PHONY: setup demo test lint typecheck unit bench clean

$(STAMP): pyproject.toml setup.py $(CSRC)
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_PIN)"
	$(BIN)/python -m pip install -q -e ".[dev]" "$(TORCH_PIN)"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/python -m subnetscope.demo

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/python -m pytest -n 2 -q

test: lint typecheck unit

bench: setup
	$(BIN)/python bench/bench_compare.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build dist src/*.egg-info
