# Two commands do all the set-up: `make demo` and `make test`.
# Each creates the virtual environment .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Fits wait for their fused step to compile, so that the tests test the compiled step and
# start no compiling processes (the step run meanwhile as Python: tests/test_meanwhile.py).
test check test-other-cpu test-nojit test-browser site notebooks: export TINYNN_COMPILE ?= foreground

.PHONY: demo draw check test test-other-cpu test-nojit test-browser browser-deps bench docs \
	site notebooks clean

$(VENV)/.installed-%: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$*]"
	touch $@

demo: $(VENV)/.installed-plots
	$(PY) examples/mnist.py $(ARGS)

# The page that reads a digit you draw (examples/draw.py), with Keras's MNIST convnet and the
# notebook's MLP behind a switch: ARGS="--port 8000 --model-kind hidden" (or --model PATH).
draw: $(VENV)/.installed-plots
	$(PY) examples/draw.py $(ARGS)

# (The docs and notebooks extras: the site and notebook tests build and run them.)
test: $(VENV)/.installed-test $(VENV)/.installed-docs $(VENV)/.installed-notebooks
	$(PY) -m ruff check .
	$(PY) -m pytest

# The fast tier (under a minute with a warm kernel cache): ruff, then the tests on both
# backends that need no MNIST, no browser and no fresh compile (CONTRIBUTING.md).
check: $(VENV)/.installed-test
	$(PY) -m ruff check .
	$(PY) -m pytest -q -m "not mnist and not browser and not slow" tests tinynn

# The whole suite as on another CPU: without AVX-512 (or AVX2 and FMA, on a CPU without
# AVX-512), every kernel compiled afresh (tools/other_cpu.py).
test-other-cpu: $(VENV)/.installed-test $(VENV)/.installed-docs $(VENV)/.installed-notebooks
	$(PY) tools/other_cpu.py $(PY) -m pytest -q

# The compiled room's tests with Numba's JIT off: its kernels run as Python.
test-nojit: $(VENV)/.installed-test
	NUMBA_DISABLE_JIT=1 $(PY) -m pytest -q -m compiled tests

# The browser test alone, after installing what it needs (make test skips it without them).
test-browser: browser-deps $(VENV)/.installed-test
	$(PY) -m pytest tests/test_draw_page.py

# Headless Chromium and its driver from Debian, selenium from PyPI.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
browser-deps: $(VENV)/.installed-browser
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  $(SUDO) apt-get update && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver; }

# The peers (Keras, PyTorch) come from the `bench` extra: a large download.
bench: $(VENV)/.installed-bench
	$(PY) -m pip install --quiet -e ".[plots]"
	$(PY) benchmarks/run.py $(ARGS)

# The site: run the tutorial (its code draws the figures into docs/figures/; MNIST
# chapters need TINYNN_DATA), then build it into site/ with --strict (mkdocs.yml).
docs: $(VENV)/.installed-test $(VENV)/.installed-docs
	$(PY) -m pytest docs -q
	$(MAKE) site

# The site alone, from the figures the chapters drew last (make test or make docs).
site: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# Each chapter as a Jupyter notebook in build/notebooks/tutorial/ (git-ignored).
notebooks: $(VENV)/.installed-notebooks
	mkdir -p build/notebooks/tutorial build/notebooks/figures
	for f in docs/tutorial/[0-9]*.md; do \
	  $(VENV)/bin/jupytext --quiet --to ipynb --output build/notebooks/tutorial/$$(basename $$f .md).ipynb $$f || exit 1; \
	done

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache site build/notebooks docs/figures
