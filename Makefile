# Two commands do everything on a fresh machine:
#   make train   set up (the package and its core dependencies only), fetch and verify MNIST, train the final model
#                (Model 8), write its results
#   make test    set up the dev extra (Chromium too, for the demo's browser test) and run every test (CI runs this)
# make notebook re-runs notebooks/main.ipynb in place (the full recipe), so that its committed outputs are a real run's.
# For the edit-run loop: make test-fast (no real MNIST, no subprocess CLI, no browser, no Ray, no kill battery, no torch.compile; about two minutes).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MODEL ?= model8
SEED ?= 1
# the main job trains on every core in float32; PRECISION=auto adds bfloat16 where the CPU computes it natively
# (faster, but it held Model 8 on 5 of 6 seeds where float32 held 6: benchmarks/NOTES.md); the recorded run, bit
# for bit on its CPU: make train THREADS=1 TRAIN_RESULTS=runs/recorded
PRECISION ?= fp32
THREADS ?= $(shell nproc 2>/dev/null || echo 1)
TRAIN_RESULTS ?= runs
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: train test test-fast setup setup-core notebook lint bench report reproduce clean

setup: $(VENV)/.installed
setup-core: $(VENV)/.core

# the package declares torch as a range; constraints.txt pins this repository's own environment. The lab (lab/:
# its studies, report, reproduce and models) is the repository's, installed beside the package, never in its wheel
$(VENV)/.core: pyproject.toml lab/pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt -e . -e ./lab
	touch $@

# every extra: what the tests, the notebook, the demo, search, Ray and export need
$(VENV)/.installed: $(VENV)/.core
	$(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt -e '.[dev]'
	touch $@

# the recorded recipe of the final model, into runs/<model>/seed<seed>/ (a finished run is kept, not redone)
train: setup-core
	$(BIN)/mnistlab reproduce --models $(MODEL) --seeds $(SEED) --no-tuning --results $(TRAIN_RESULTS) \
		--threads $(THREADS) --precision $(PRECISION)

test: setup $(CHROMIUM)
	$(BIN)/python -m pytest -q

# the tiers are markers (tests/conftest.py): real_data, cli, browser, ray, kills, compiles
test-fast: setup
	$(BIN)/python -m pytest -q -m "not real_data and not cli and not browser and not ray and not kills and not compiles"

# the demo's browser test drives Debian's chromium (Playwright's own browser download cannot work offline)
$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium

# the notebook executed in place, its outputs from a real run of the full recipe (runs/notebook-model8)
notebook: setup
	$(BIN)/python -c "import nbformat, nbclient; nb = nbformat.read('notebooks/main.ipynb', 4); \
	nbclient.NotebookClient(nb, timeout=7200, kernel_name='python3', resources={'metadata': {'path': '.'}}).execute(); \
	nbformat.write(nb, 'notebooks/main.ipynb')"

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
