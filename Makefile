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

# For now: train the 25-Gaussian toy preset (a few minutes on 2 CPU cores) and plot DDIM samples.
demo: $(BIN)/.installed
	$(BIN)/trilemma train configs/toy2d-ddpm.yaml --steps 6000 --out runs/demo $(if $(wildcard runs/demo/checkpoint),--resume,)
	$(BIN)/trilemma sample runs/demo --sampler ddim --steps 100 -n 2500 --seed 0 --out runs/demo/ddim100.png
	@echo "sample plot: runs/demo/ddim100.png"

test: $(BIN)/.installed
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache
