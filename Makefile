# Entry points: run, test, lint, fmt, bench. Each creates .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= ./data

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml clients/python/pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q -e clients/python
	touch $@ $(VENV)/.installed

.PHONY: install run test lint fmt bench
install: $(VENV)/.installed

run: $(VENV)/.installed
	@echo "runlake dashboard: http://$${RUNLAKE_HOST:-127.0.0.1}:$${RUNLAKE_PORT:-8080}/ (the API is under /api/)"
	$(BIN)/runlake serve --data $(DATA)

# tests/web drive Debian's chromium (no browser download); CI runs as root on a fresh machine.
CHROMIUM ?= /usr/bin/chromium

test: $(VENV)/.installed-test
	test -x $(CHROMIUM) || (apt-get update -q && apt-get install -y -q chromium)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .

fmt: $(VENV)/.installed-test
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(VENV)/.installed-test
	$(BIN)/python bench/run.py --quick
