# make repro: the whole study from scratch, mirrored in MLflow; make test: the test suite.
# Every target sets up .venv first.
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
HOST ?= 127.0.0.1
PORT ?= 5000
BASE ?= origin/main
TABLE := awk '/^\|/ {p = 1; print; next} p {exit}' reports/comparison.md
OUTPUTS := metrics reports dvc.lock

.PHONY: setup data repro repro-all sync test lint ui check check-outputs pr-comment bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

# names.txt into data/raw and $ACTGRAD_DATA_CACHE (the tests read it there)
data: setup
	dvc repro download

# the stages that are out of date, independent ones at once (pipeline/repro.py), then MLflow
repro: setup
	python -m pipeline.repro
	python -m pipeline.sync
	@$(TABLE)

# every stage again, even those whose committed outputs look up to date (what CI runs)
repro-all: setup
	python -m pipeline.repro --force
	python -m pipeline.sync
	@$(TABLE)

# after dvc pull, dvc checkout or dvc exp apply: one current MLflow run per stage of dvc.lock
sync: setup
	python -m pipeline.sync

test: setup
	python -m pytest

lint: setup
	pre-commit run --all-files

check: setup
	python -m pipeline.check

# exit 1 when the outputs of the last repro differ from the committed ones
check-outputs: setup
	@changed=$$(git status --porcelain -- $(OUTPUTS)); \
	if [ -n "$$changed" ]; then \
	  echo "outputs that differ from the committed ones:"; echo "$$changed"; dvc metrics diff; exit 1; \
	fi; \
	echo "the outputs ($(OUTPUTS)) are the committed ones"

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

bench: setup
	python bench/engine.py
	python bench/step.py
	python bench/repro.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
