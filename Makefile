# make repro: what is out of date of the study, then MLflow mirrors dvc.lock; make repro-all:
# all of it again; make test: the test suite.
# Every target sets up .venv first.
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
HOST ?= 127.0.0.1
PORT ?= 5000
JUPYTER_PORT ?= 8888
BASE ?= origin/main
TABLE := awk '/^\|/ {p = 1; print; next} p {exit}' reports/comparison.md

.PHONY: setup lock data repro repro-all sync test test-fast lint ui check check-outputs pr-comment docs bench notebook clean

setup: $(VENV)/.installed

# every package at the version requirements.lock pins, then the project itself
$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

# requirements.lock afresh from pyproject.toml (pip-tools); torch pinned as 2.13.0, whichever
# build (+cpu) the index gave
lock:
	test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check 'pip-tools>=7.5'
	pip-compile --quiet --extra dev --strip-extras --no-emit-index-url --no-emit-find-links \
	  --output-file requirements.lock pyproject.toml
	sed -i 's/^torch==\([0-9.]*\)+.*/torch==\1/' requirements.lock

# names.txt into data/raw and the download cache ($ACTGRAD_DATA_CACHE, else ~/.cache/actgrad),
# where the tests read it
data: setup
	dvc repro download

# the stages that are out of date, independent ones at once (pipeline/tools/repro.py), then MLflow
repro: setup
	python -m pipeline.tools.repro
	python -m pipeline.tracking.sync
	@$(TABLE)

# every stage again, even those whose committed outputs look up to date (what CI runs)
repro-all: setup
	python -m pipeline.tools.repro --force
	python -m pipeline.tracking.sync
	@$(TABLE)

# after dvc pull, dvc checkout or dvc exp apply: one current MLflow run per stage of dvc.lock
sync: setup
	python -m pipeline.tracking.sync

test: setup
	python -m pytest -n auto --dist loadgroup

# the unit tiers (pieces, config, data, report tables, instruments): no DVC project
test-fast: setup
	python -m pytest -n auto --dist loadgroup -m "not slow"

lint: setup
	pre-commit run --all-files

check: setup
	python -m pipeline.tools.check_lecture

# exit 1 when the outputs of the last repro differ from the committed ones: bit for bit on the
# machine that made them (metrics/machine.json), within tolerance.yaml elsewhere
check-outputs: setup
	python -m pipeline.tools.check_outputs

# pr-comment.md: the results table, dvc metrics diff against $(BASE), the loss overlay
pr-comment: setup
	@diff=$$(dvc metrics diff --md $(BASE) --targets metrics/*.json) && { \
	  echo "## The study on this pull request"; echo; $(TABLE); echo; \
	  echo "### What changed in metrics/*.json: \`dvc metrics diff $(BASE)\`"; echo; \
	  echo "$$diff"; echo; \
	  echo "![log10 loss of every variant](reports/figures/loss_curves.png)"; \
	} > pr-comment.md
	@echo "wrote pr-comment.md"

ui: setup
	mlflow ui --backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}" --host $(HOST) --port $(PORT)

# the tour (notebooks/tour.ipynb) in JupyterLab, served from the project's root: the optional
# extra `notebook` installed first, each package the lock pins at its version; the notebook's
# kernel is this .venv's Python, in notebooks/
notebook: setup $(VENV)/.notebook
	jupyter lab --ServerApp.ip=$(HOST) --ServerApp.port=$(JUPYTER_PORT) \
	  --ServerApp.root_dir=$(CURDIR) --LabApp.default_url=/lab/tree/notebooks/tour.ipynb

$(VENV)/.notebook: pyproject.toml requirements.lock
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[notebook]'
	touch $@

# every command whose output a docs page shows, run again and its output written into the page
# (it reads the study's outputs and models: after make repro)
docs: setup
	python -m pipeline.tools.render docs docs/*.md

# every bench docs/speed.md names, its output written into the page
bench: setup
	python -m pipeline.tools.render bench docs/speed.md

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
