# `make test` builds everything it needs from a clean clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test soak lint install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[train,serve,dev]'
	touch $(STAMP)

install: $(STAMP)

# Serve the store's model on 127.0.0.1:8000; an empty store first gets the built-in default
# (generated images -> training -> export -> gallery), each step reused on later runs.
run: $(STAMP)
	$(BIN)/alexnet quickstart

test: $(STAMP)
	$(BIN)/ruff check training service tests
	$(BIN)/python -m pytest -q

# Load (64 clients, 60 s), ten SIGKILLs and a long schemathesis run against real servers on
# 127.0.0.1; prints a table of figures per run and writes runs/soak/report.json.
soak: $(STAMP)
	rm -f runs/soak/report.json
	$(BIN)/python -m pytest -q -s -m soak tests/soak

lint: $(STAMP)
	$(BIN)/ruff check training service tests
	$(BIN)/ruff format --check training service tests

clean:
	rm -rf $(VENV) .pytest_cache
