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

# Fashion-MNIST (Debian's dataset-fashion-mnist): the quick scale's stand-in for MNIST and CIFAR-10.
# Installed when running as root with apt-get; otherwise the stages say which file is missing and where.
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: env data reproduce test lint
env: $(BIN)/.installed

data:
	@if [ ! -d $(FASHION_MNIST) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing dataset-fashion-mnist (Debian) into $(FASHION_MNIST)"; \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
	    || echo "note: could not install dataset-fashion-mnist; stages that need it will name the missing file"; \
	fi

reproduce: $(BIN)/.installed data
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake reproduce-all --cores $(CORES) --config scale=$(SCALE)

test: $(BIN)/.installed data
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/ruff check .
	PATH=$(CURDIR)/$(BIN):$$PATH HYPOTHESIS_PROFILE=ci $(BIN)/pytest -n 2 --dist loadfile -q

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --lint
