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
	$(BIN)/runlake serve --data $(DATA)

test: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .

fmt: $(VENV)/.installed-test
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(VENV)/.installed-test
	$(BIN)/python bench/run.py --quick
