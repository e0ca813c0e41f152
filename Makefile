# Two commands do everything on a fresh machine:
#   make train   set up, fetch and verify MNIST, train the final model (Model 8), write its results
#   make test    set up and run the tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MODEL ?= model8
SEED ?= 1

.PHONY: train test setup lint bench report reproduce clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[dev]'
	touch $@

# the recorded recipe of the final model, into runs/<model>/seed<seed>/ (a finished run is kept, not redone)
train: setup
	$(BIN)/mnistlab reproduce --models $(MODEL) --seeds $(SEED) --no-tuning --results runs

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: setup
	$(BIN)/python benchmarks/speed.py
	$(BIN)/python benchmarks/variants.py

report: setup
	$(BIN)/mnistlab report

reproduce: setup
	$(BIN)/mnistlab reproduce

clean:
	rm -rf $(VENV) runs .pytest_cache
