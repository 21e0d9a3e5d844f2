# Two commands do all the set-up: `make demo` and `make test`.
# Each creates the virtual environment .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench clean

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

# The peers (Keras, PyTorch) come from the `bench` extra: a large download.
bench: $(VENV)/.installed-bench
	$(PY) -m pip install --quiet -e ".[plots]"
	$(PY) benchmarks/run.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache
