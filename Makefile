# hubstream: the two commands are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
HOME_DIR := $(or $(HUBSTREAM_HOME),$(CURDIR)/.local)
VENV := $(HOME_DIR)/venv
BIN := $(VENV)/bin
STACK := $(PYTHON) deploy/local/stack.py
# The local stack is a single broker: topics with one replica and min.insync.replicas 1
# (hubstream/settings.py; a real cluster leaves this unset and gets 3 and 2).
export HUBSTREAM_DEPLOYMENT ?= local

.PHONY: help install browser up down status clean demo test unit integration lint bench

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

install: $(VENV)/.installed web/build/hub.css ## Virtualenv with hubstream and its pinned dependencies; GOV.UK Frontend and the pages' styles

$(VENV)/.installed: pyproject.toml
	@mkdir -p $(HOME_DIR)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

# GOV.UK Frontend (and axe-core, for the page tests) from npm, at the versions in the lock file;
# the pages' stylesheet is built from it, in the system typeface (web/styles/hub.scss).
web/node_modules/.package-lock.json: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund --loglevel=error

web/build/hub.css: web/styles/hub.scss web/node_modules/.package-lock.json
	cd web && npx --no-install sass --no-source-map --style=compressed --load-path=node_modules styles/hub.scss build/hub.css

browser: ## Debian's Chromium and ChromeDriver, for the page tests (headless)
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { \
	  test "$$(id -u)" = 0 || { echo "install them: sudo apt-get install -y chromium chromium-driver"; exit 1; }; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; }

up: install ## Start Kafka, PostgreSQL, the schema registry and Keycloak (idempotent; waits until each answers)
	$(STACK) up
	$(BIN)/hubstream topics create
	$(BIN)/python -m hubstream.kafka_security apply

down: ## Stop everything the project started (the demo's web application too)
	@test ! -x $(BIN)/python || $(BIN)/python -m hubstream.demo stop-web
	$(STACK) down

status: ## Show each part of the local stack and whether it answers
	$(STACK) status

clean: ## Stop and remove local state (keeps downloaded jars)
	$(STACK) clean

demo: up ## THE FIRST COMMAND: simulate a county, run the pipeline, print alerts, tracker and flags
	$(BIN)/hubstream demo

test: up browser ## THE SECOND COMMAND: lint, type-check, unit tests and integration tests on the real stack
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

unit: install ## Unit tests only (no broker, no database)
	$(BIN)/python -m pytest tests/unit

lint: install ## ruff, mypy and the import-layer contracts
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

BENCH_VENV := $(HOME_DIR)/bench-venv

bench: up ## Benchmarks on the local stack; prints a table and writes bench/results/*.json
	@test -x $(BENCH_VENV)/bin/python || ( $(PYTHON) -m venv --without-pip $(BENCH_VENV) && \
	  $(BIN)/pip --python $(BENCH_VENV)/bin/python install -q quixstreams==3.28.1 fastavro==1.13.1 \
	    kafka-python==3.0.12 py-spy==0.4.3 tqdm==4.70.1 click==8.1.8 )
	$(BIN)/python -m bench
