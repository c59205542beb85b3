# The README's two commands: `make demo` and `make test`. Both build .venv (Python 3.12) when missing.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WHEELS := $(VENV)/wheels/.fetched
PYTEST_ARGS ?=

# Python 3.12: a working python3.12 on PATH, else pyenv's install (the bare pyenv shim fails until
# pyenv is told a version; .python-version does that inside this checkout, this loop covers the rest).
PYTHON312 ?= $(shell for c in python3.12 $$(pyenv root 2>/dev/null)/versions/3.12*/bin/python3.12 \
	/usr/bin/python3.12 /usr/local/bin/python3.12; do \
	  "$$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1 && { echo "$$c"; break; }; \
	done)

.PHONY: setup test test-all test-recipes demo lint format clean-demo

# The code sandbox needs bubblewrap (a system package): say so, without failing setup for users who
# cannot install it (the sandbox refuses at use time).
setup: $(STAMP) $(WHEELS)
	@$(PY) -m megatron_infi.scoring.code || echo "  -> the code sandbox refuses model-written code until then (make setup continues)"

$(STAMP): setup.py constraints.txt
	@test -n "$(PYTHON312)" || { echo "error: Python 3.12 not found (tried python3.12 and pyenv's versions/3.12*)"; exit 1; }
	@test -x $(PY) || { echo "creating $(VENV) with $(PYTHON312)"; $(PYTHON312) -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[all]"
	@touch $(STAMP)

$(WHEELS): wheels.txt $(STAMP)
	$(PY) -m pip download --quiet --no-deps -r wheels.txt -d $(VENV)/wheels
	@touch $(WHEELS)

test: setup
	$(PY) -m pytest -q -m "not gpu" $(PYTEST_ARGS) tests

# The paper recipes' shipped configs chained at toy scale (tests/recipes/; also part of `make test`).
test-recipes: setup
	$(PY) -m pytest -q -m recipe $(PYTEST_ARGS) tests/recipes

test-all: setup
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

demo: setup
	$(PY) -m megatron_infi.demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean-demo:
	rm -rf runs/demo
