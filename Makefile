# Two commands from a clean clone: `make demo` (the main job on built-in data) and `make test`.
# Both create .venv and install torch==2.13.0 first (a bare `torch` requirement would pull a CUDA
# build of several GB), then this package. Elsewhere, pick your torch: make test TORCH="torch==2.13.0 --index-url ..."

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install demo test clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

install: $(BIN)/.installed

# The trilemma benchmark on the 25-Gaussian grid from the shipped toy checkpoint (about a minute on
# 2 CPU cores once installed): prints the table and writes runs/demo/report.html.
demo: $(BIN)/.installed
	$(BIN)/trilemma demo --out runs/demo

test: $(BIN)/.installed
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache
