# make repro: the whole study from scratch, mirrored in MLflow; make test: the test suite.
# Every target sets up .venv first.
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
HOST ?= 127.0.0.1
PORT ?= 5000

.PHONY: setup repro sync test lint ui check bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

repro: setup
	dvc repro
	python -m pipeline.sync
	@awk '/^\|/ {p = 1; print; next} p {exit}' reports/comparison.md

# after dvc pull, dvc checkout or dvc exp apply: one current MLflow run per stage of dvc.lock
sync: setup
	python -m pipeline.sync

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
