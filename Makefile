# The two commands a user types are `make run` and `make test`; everything else is for developers.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint browser unit integration e2e fuzz bench soak clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## Start the embedded broker and database and every service; prints the API URL. Ctrl-C stops it all.
run: $(STAMP)
	$(PY) -m services.cli run

## The whole suite: lint, types, unit, integration and end-to-end tests on a real broker and database.
test: $(STAMP) lint browser
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check domain services projections tests
	$(VENV)/bin/ruff format --check domain services projections tests
	$(VENV)/bin/mypy

## Debian's chromium, which the console tests drive (installed once when missing; needs root, as in CI),
## axe-core from npm, which they run on every page, and the OpenID Connect provider below (into the venv:
## nothing is fetched at test time).
AXE := $(VENV)/axe/node_modules/axe-core/axe.min.js
OIDC := $(VENV)/oidc/node_modules/oidc-provider/package.json

browser: $(AXE) $(OIDC)
	@command -v chromium >/dev/null || { echo "installing Debian's chromium for the console tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

$(AXE): $(STAMP)
	npm install --silent --no-audit --no-fund --prefix $(VENV)/axe axe-core@4.14.1
	@touch $@

$(OIDC): $(STAMP)
	npm install --silent --no-audit --no-fund --prefix $(VENV)/oidc oidc-provider@9.13.3
	@touch $@

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

integration: $(STAMP)
	$(PY) -m pytest -q tests/integration

e2e: $(STAMP) browser
	$(PY) -m pytest -q tests/e2e

## The schemathesis run of the whole API with many more examples than `make test` uses.
fuzz: $(STAMP)
	TICKETING_FUZZ_EXAMPLES=$${TICKETING_FUZZ_EXAMPLES:-300} TICKETING_FUZZ_SEED=$(or $(SEED),7) $(PY) -m pytest -q -p no:cacheprovider tests/integration/test_fuzz.py --timeout 3600

## Every benchmark in one run; prints a table and writes bench-results.json. QUICK=1: scaled down;
## ONLY="ingest api": those alone (raw, ingest, latency, api, console, live: console without its 1M views). RULES=20: that many grouping rules per org.
bench: $(STAMP)
	$(PY) -m tests.bench.runner $(if $(QUICK),--quick,) $(if $(ONLY),--only $(ONLY),) $(if $(RULES),--rules $(RULES),) --out bench-results.json

## Every service at a steady rate for a long while (MINUTES=30, RATE=500/s): memory, lag, loss.
soak: $(STAMP)
	$(PY) -m tests.bench.soak --minutes $(or $(MINUTES),30) --rate $(or $(RATE),500) --out soak-results.json

clean:
	rm -rf $(VENV) .state .pytest_cache .mypy_cache .ruff_cache *.egg-info
