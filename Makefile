# Two commands do all the set-up: `make demo` and `make test`.
# Each creates the virtual environment .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint clean

$(VENV)/.installed-%: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$*]"
	touch $@

demo: $(VENV)/.installed-plots
	$(PY) examples/mnist.py $(ARGS)

test: $(VENV)/.installed-test
	$(PY) -m ruff check .
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache
