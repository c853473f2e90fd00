# `make test` builds everything it needs from a clean clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test lint install clean bench bench-1m

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[train,serve,dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check training service tests
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check training service tests bench
	$(BIN)/ruff format --check training service tests bench

# Speed, measured in one run: raw engine vs service vs naive PyTorch, /similar at 10k and 100k.
# Writes bench/results/bench.json and bench.png; the model is made in bench/work (first run).
bench: $(STAMP)
	$(BIN)/python -m bench --out bench/results

# /similar with 1M gallery vectors (about 17 GB of disk in bench/work while it runs).
bench-1m: $(STAMP)
	$(BIN)/python -m bench --only similar --sizes 1000000 --out bench/results-1m

clean:
	rm -rf $(VENV) .pytest_cache
