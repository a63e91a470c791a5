# Two entry points matter: `make demo` and `make test` (see README.md). Both install what they need.
PY ?= python3
VENV := .venv

.PHONY: setup system-deps demo test lint

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

system-deps:
	bash scripts/system-deps.sh

demo: setup system-deps
	$(VENV)/bin/airflow-ops demo

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: setup system-deps lint
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/pytest
