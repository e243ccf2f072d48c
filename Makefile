# The two commands of the README. Each creates the environment (.venv in the repo) if missing.
#   make reproduce   -> snakemake reproduce-all at the default (quick) scale
#   make test        -> the test suite (what CI runs)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SCALE ?= quick
CORES ?= all

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

.PHONY: env reproduce test lint
env: $(BIN)/.installed

reproduce: $(BIN)/.installed
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake reproduce-all --cores $(CORES) --config scale=$(SCALE)

test: $(BIN)/.installed
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/ruff check .
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest -n 2 --dist loadfile -q

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --lint
