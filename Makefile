# `make test` builds everything it needs from a clean clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test lint install clean

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
	$(BIN)/ruff check training service tests
	$(BIN)/ruff format --check training service tests

clean:
	rm -rf $(VENV) .pytest_cache
