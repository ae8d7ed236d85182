# make repro: the whole study from scratch; make test: the test suite. Both set up .venv first.
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
HOST ?= 127.0.0.1
PORT ?= 5000

.PHONY: setup repro test lint ui check bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

repro: setup
	dvc repro
	@awk '/^\|/ {p = 1; print; next} p {exit}' reports/comparison.md

test: setup
	python -m pytest

lint: setup
	ruff check . && ruff format --check .

check: setup
	python -m pipeline.check

ui: setup
	mlflow ui --backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}" --host $(HOST) --port $(PORT)

bench: setup
	python bench/engine.py
	python bench/repro.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
