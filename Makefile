# The two quickstart commands: `make demo` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test install lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Re-install when the project's metadata changes.
# An editable install does not place the wheel's data files: put the server extension's
# switch where a wheel install puts it, so JupyterLab in the venv loads labrun.
SWITCH := jupyter-config/jupyter_server_config.d/labrun.json
SWITCH_DIR := $(VENV)/etc/jupyter/jupyter_server_config.d
# torch first and pinned: 2.13.0 is the CPU build in the local wheel cache (RECIPE.md);
# an unpinned torch would download a multi-GB CUDA build.
$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q torch==2.13.0 numpy
	$(BIN)/python -m pip install -q -e ".[dev]"
	mkdir -p $(SWITCH_DIR) && cp $(SWITCH) $(SWITCH_DIR)/labrun.json
	touch $@

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[all]"
	mkdir -p $(SWITCH_DIR) && cp $(SWITCH) $(SWITCH_DIR)/labrun.json
	touch $@

install: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(BIN)/labrun demo

test: $(VENV)/.installed-dev
	scripts/ensure-postgres.sh
	LABRUN_REQUIRE_POSTGRES=1 $(BIN)/python -m pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(VENV)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache
