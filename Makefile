# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench figures dot cc venv clean

demo: $(STAMP) dot cc
	$(VENV)/bin/graphcompiler demo

test: $(STAMP) dot cc
	$(PY) -m pytest -q

bench: $(STAMP) cc
	$(PY) benchmarks/run.py

figures: $(STAMP) dot
	$(PY) docs/make_figures.py docs/figures

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
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

clean:
	rm -rf $(VENV) build dist *.egg-info
