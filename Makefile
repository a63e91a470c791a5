# Two entry points matter: `make demo` and `make test` (see README.md). Both install what they need.
PY ?= python3
VENV := .venv

.PHONY: setup system-deps demo test lint dashboard-previews

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

# Redraws docs/dashboards/*.png from a real Airflow 3 + airflow-ops + Prometheus (a few minutes).
dashboard-previews: setup system-deps
	$(VENV)/bin/python -m grafana_dashboards.proof --out docs/dashboards
