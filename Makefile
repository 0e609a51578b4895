# scrapesink — every target bootstraps its own .venv; `make` alone lists them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install dev demo test lint format bench sample clean

help: ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-8s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed ## install scrapesink into .venv

dev: $(VENV)/.installed-dev ## install scrapesink with the dev extras into .venv

demo: install ## start the embedded PostgreSQL, migrate, ingest the bundled sample events
	$(BIN)/scrapesink demo

test: dev ## run the whole test suite (unit, integration, e2e) against real PostgreSQL
	$(BIN)/pytest -n 2 $(PYTEST_ARGS)

lint: dev ## ruff and mypy (strict on src/)
	$(BIN)/ruff check src tests bench scripts examples
	$(BIN)/ruff format --check src tests bench scripts examples
	$(BIN)/mypy

format: dev ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix src tests bench scripts examples
	$(BIN)/ruff format src tests bench scripts examples

bench: dev ## run the benchmarks in bench/ and write bench/RESULTS.md
	$(BIN)/python bench/run.py

sample: ## regenerate the bundled sample events
	$(PYTHON) scripts/make_sample.py

clean: ## remove .venv, caches and the local data directory
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache data
