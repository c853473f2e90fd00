# `make test` builds everything it needs from a clean clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test soak lint install clean bench bench-1m

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[train,serve,dev]'
	touch $(STAMP)

install: $(STAMP)

# Serve the store's model on 127.0.0.1:8000; an empty store first gets the built-in default:
# torchvision's ImageNet AlexNet when its weights are in the torch hub cache or download within
# a short timeout (not with ALEXNET_OFFLINE=1), else one trained on generated images; then
# int8 and a gallery, each step reused on later runs. The log says what the model knows.
run: $(STAMP)
	$(BIN)/alexnet quickstart

# ruff, the import contracts of pyproject.toml ([tool.importlinter]), then the test suite.
test: $(STAMP)
	$(BIN)/ruff check core training service alexnet tests bench
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

# Load (64 clients, 60 s), ten SIGKILLs and a long schemathesis run against real servers on
# 127.0.0.1; prints a table of figures per run and writes runs/soak/report.json.
soak: $(STAMP)
	rm -f runs/soak/report.json
	$(BIN)/python -m pytest -q -s -m soak tests/soak

lint: $(STAMP)
	$(BIN)/ruff check core training service alexnet tests bench
	$(BIN)/lint-imports
	$(BIN)/ruff format --check core training service alexnet tests bench

# Speed, measured in one run: raw engine vs service vs naive PyTorch, /similar at 10k and 100k.
# Writes bench/results/bench.json and bench.png; the model is made in bench/work (first run).
bench: $(STAMP)
	$(BIN)/python -m bench --out bench/results

# /similar with 1M gallery vectors (about 17 GB of disk in bench/work while it runs).
bench-1m: $(STAMP)
	$(BIN)/python -m bench --only similar --sizes 1000000 --out bench/results-1m

clean:
	rm -rf $(VENV) .pytest_cache
