# Two commands do all the set-up: `make demo` and `make test`.
# Each creates the virtual environment .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench docs notebooks clean

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

# The site: run the tutorial (its code draws the figures into docs/figures/; MNIST
# chapters need TINYNN_DATA), then build it into site/ with --strict (mkdocs.yml).
docs: $(VENV)/.installed-test $(VENV)/.installed-docs
	$(PY) -m pytest docs -q
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# Each chapter as a Jupyter notebook in build/notebooks/tutorial/ (git-ignored).
notebooks: $(VENV)/.installed-docs
	mkdir -p build/notebooks/tutorial build/notebooks/figures
	for f in docs/tutorial/[0-9]*.md; do \
	  $(VENV)/bin/jupytext --quiet --to ipynb --output build/notebooks/tutorial/$$(basename $$f .md).ipynb $$f || exit 1; \
	done

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache site build/notebooks docs/figures
