# d4lenspinn: `make demo` and `make test` install into .venv/ first when it is missing or stale.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test lint bench demo clean

install: $(STAMP)

# escnn -> py3nj is compiled with a Fortran compiler: install Debian's gfortran when it is missing.
$(STAMP): pyproject.toml
	@command -v gfortran >/dev/null 2>&1 || { \
	    echo "gfortran not found: installing it with apt-get (needed to build escnn's py3nj)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gfortran; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip wheel
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check d4lenspinn interp tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/physics.py
	$(BIN)/python benchmarks/physics_accuracy.py

# The main job: simulate a small 64x64 set, train D4LensPINN briefly, evaluate with and without D4 TTA.
demo: $(STAMP)
	$(BIN)/d4lenspinn demo --config configs/demo.yaml --overwrite

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache runs/demo data/demo
