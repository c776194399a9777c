# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench figures dot cc browser notebooks venv clean

demo: $(STAMP) dot cc
	$(VENV)/bin/graphcompiler demo

test: $(STAMP) dot cc browser
	$(PY) -m pytest -q

bench: $(STAMP) cc
	$(PY) benchmarks/run.py
	$(PY) benchmarks/lenet.py

# Execute the notebooks in place: they are committed with their outputs, so they read without running them.
notebooks: $(STAMP) dot
	$(PY) notebooks/execute.py

figures: $(STAMP) dot
	$(PY) docs/make_figures.py docs/figures

# ruff (lint) and mypy, configured in pyproject.toml; `.ci/run` runs this before the tests.
.PHONY: lint format
lint: $(STAMP)
	$(VENV)/bin/ruff check graphcompiler tests benchmarks docs
	$(VENV)/bin/mypy graphcompiler
	$(VENV)/bin/ruff format --check graphcompiler

# Reformat the package with ruff's formatter (what `make lint` checks).
format: $(STAMP)
	$(VENV)/bin/ruff format graphcompiler

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,demo,jax,dask]'
	touch $(STAMP)

# Graphviz's `dot` renders the pictures; install it through apt when missing.
dot:
	@command -v dot >/dev/null 2>&1 || { \
	  echo "installing graphviz (dot) through apt"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq graphviz >/dev/null; }

# A C compiler for backend "c" (gc.compile(..., backend="c")); without one that backend runs on NumPy.
cc:
	@command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || command -v clang >/dev/null 2>&1 || { \
	  echo "installing a C compiler (gcc) through apt"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq gcc python3-dev >/dev/null; }

# Headless Chromium and its driver run the explorer page's browser tests; install them through apt when missing.
browser:
	@{ command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } || { \
	  echo "installing chromium and chromium-driver through apt"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

clean:
	rm -rf $(VENV) build dist *.egg-info
