# Every target sets itself up from nothing: a virtual environment, pip and npm packages.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
DEV_STAMP := $(VENV)/.dev-installed
TRAIN_STAMP := $(VENV)/.train-installed
BROWSER_STAMP := $(VENV)/.browser-installed
CHROMIUM := /usr/bin/chromium
NPM_STAMP := node_modules/.installed
PYTEST_ARGS ?=

.PHONY: all venv test lint typecheck unit chromium demo demo-transfers bench experiment reliability contracts clean

all: test

$(DEV_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@

# flower and ray: the Flower adapter's and the Ray backend's tests run in `make test`.
$(TRAIN_STAMP): $(DEV_STAMP)
	$(PIP) install --quiet --disable-pip-version-check -e ".[dev,train,flower,ray]"
	touch $@

# Playwright for Python (the `browser` extra) drives Debian's chromium in the explorer's test;
# it never downloads a browser of its own (no `playwright install`).
$(BROWSER_STAMP): $(TRAIN_STAMP)
	$(PIP) install --quiet --disable-pip-version-check -e ".[dev,train,flower,ray,browser]"
	touch $@

# Debian's chromium for the explorer's browser test, installed when missing and we are root
# (CI is); otherwise that one test skips and says what is missing.
chromium:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; } \
			|| echo "note: apt-get could not install chromium: the browser test will skip"; \
	else echo "note: $(CHROMIUM) is missing and we are not root: the browser test will skip"; fi

$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

venv: $(DEV_STAMP)

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(DEV_STAMP)
	$(VENV)/bin/mypy

# npm packages (solc, anvil) are installed when the project has a package.json.
NPM_DEPS := $(if $(wildcard package.json),$(NPM_STAMP),)

unit: $(TRAIN_STAMP) $(BROWSER_STAMP) chromium $(NPM_DEPS)
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

test: lint typecheck unit

demo: $(TRAIN_STAMP)
	$(VENV)/bin/fedrollup demo

demo-transfers: $(DEV_STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/demo.sh

bench: $(DEV_STAMP)
	$(VENV)/bin/fedrollup bench ingest
	$(VENV)/bin/fedrollup bench krum

reliability: $(TRAIN_STAMP) $(NPM_DEPS)
	FEDROLLUP_LONG=1 $(VENV)/bin/pytest -q -s tests/test_soak.py tests/test_l1_faults.py tests/test_fuzz_api.py tests/test_slow_clients.py tests/test_contract_invariants.py tests/test_cross_layer_conservation.py tests/test_crash.py tests/test_authority.py

experiment: $(TRAIN_STAMP)
	$(VENV)/bin/fedrollup experiment

contracts: $(DEV_STAMP) $(NPM_STAMP)
	$(PY) -m l1_bridge.build_contracts

clean:
	rm -rf $(VENV) node_modules .mypy_cache .ruff_cache .pytest_cache .hypothesis
