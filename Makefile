# Two commands do everything on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
KEDRO := $(VENV)/bin/kedro
SAMPLE := data/01_raw/compcars_sample
STAMP := $(VENV)/.installed

# Telemetry off for Kedro, DVC, MLflow; no hub downloads; caches inside the project.
export DO_NOT_TRACK := true
export KEDRO_DISABLE_TELEMETRY := true
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TORCH_HOME := $(CURDIR)/.cache/torch
export HF_HOME := $(CURDIR)/.cache/hf
export MPLCONFIGDIR := $(CURDIR)/.cache/matplotlib
export NUMBA_CACHE_DIR := $(CURDIR)/.cache/numba

.PHONY: install sample run test lint clean-data weights weights-dvc

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

$(SAMPLE)/sample_info.json: | $(STAMP)
	$(PY) -m compcars_kedro.sample --out $(SAMPLE)

sample: $(SAMPLE)/sample_info.json

REPORT := data/08_reporting/report.html

# Ends by printing where the report is (and whether this run rebuilt it); the full log of the
# run is appended to logs/kedro.log (conf/logging.yml).
run: install sample
	@mkdir -p logs && touch logs/.run-start
	$(KEDRO) run $(ARGS)
	@if [ -f $(REPORT) ] && [ $(REPORT) -nt logs/.run-start ]; then \
	  echo "Report: $(CURDIR)/$(REPORT)"; \
	elif [ -f $(REPORT) ]; then \
	  echo "Report (not rebuilt by this run; ARGS='--pipelines reporting' rebuilds it): $(CURDIR)/$(REPORT)"; \
	else \
	  echo "No report yet: the default pipeline (or --pipelines reporting) writes $(REPORT)"; \
	fi
	@echo "Log: $(CURDIR)/logs/kedro.log"

# pytest-xdist: TEST_WORKERS processes (default 2, the CI machine's cores; 0 = in-process).
# Measured 2026-12-02 on an idle 2-core machine: 426 s with 2 workers, 599 s in one process.
TEST_WORKERS ?= 2
test: install
	$(VENV)/bin/pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

# Pretrained weights of an env (default compcars) into .cache/ (TORCH_HOME / HF_HOME), with
# the network: the only command that lifts the offline switches. ARGS=--dry-run lists them.
ENV ?= compcars
ifeq ($(origin ENV),environment)
ENV := compcars# a shell's exported ENV (sh start-up file) is not a Kedro env
endif
weights: install
	HF_HUB_OFFLINE=0 TRANSFORMERS_OFFLINE=0 $(PY) -m compcars_kedro.weights --env $(ENV) $(ARGS)

# Track the weights caches with DVC (weights.dvc, commit it) and push them to the remote, so
# that `dvc pull` on another machine brings the weights with the data.
weights-dvc: install
	mkdir -p .cache/torch/hub/checkpoints .cache/hf/hub
	test -f weights.dvc || printf 'outs:\n- path: .cache/torch/hub/checkpoints\n- path: .cache/hf/hub\n' > weights.dvc
	$(VENV)/bin/dvc commit --force weights.dvc
	$(VENV)/bin/dvc push weights.dvc
	@echo "now: git add weights.dvc && git commit -m 'pretrained weights'"

clean-data:
	find data -mindepth 2 ! -name .gitkeep ! -name '*.dvc' -delete

# ---------------------------------------------------------------- kedro-viz and DVC
# docs/tracking_and_versioning.md. `kedro viz build` writes the static site to build/ (fixed
# name); `make viz` serves it on 127.0.0.1 only, with no version check or telemetry calls.
VIZ_PORT ?= 4141
DVC := $(VENV)/bin/dvc

.PHONY: viz viz-build dvc-repro dvc-status dvc-pull dvc-push

viz-build: install
	rm -rf build
	$(KEDRO) viz build $(VIZ_ARGS)
	@test -f build/index.html || { echo "kedro viz build failed (see above)"; exit 1; }

viz: viz-build
	@echo "Kedro-Viz: http://127.0.0.1:$(VIZ_PORT)/  (Ctrl-C to stop)"
	$(PY) -m http.server $(VIZ_PORT) --bind 127.0.0.1 --directory build

# Stages call `kedro`: the venv's bin goes first on PATH. `make dvc-repro ARGS=data_engineering`
dvc-repro: install sample
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(DVC) repro $(ARGS)

# A short summary (plain `dvc status` lists every dep of every stage never run: ~800 lines on
# a fresh clone); `make dvc-status ARGS=<stage>` or `.venv/bin/dvc status <stage>` for details.
dvc-status: install
	$(if $(ARGS),$(DVC) status $(ARGS),$(PY) -m compcars_kedro.dvc_status)

# --allow-missing: stages that never ran anywhere (no dvc.lock entry) have nothing to pull; plain
# `dvc pull` fails on them after fetching everything else. `make dvc-status` shows what is missing.
dvc-pull: install
	$(DVC) pull --allow-missing $(ARGS)

dvc-push: install
	$(DVC) push $(ARGS)

.PHONY: mlflow-ui
mlflow-ui: install   ## MLflow UI on the project's SQLite store, http://127.0.0.1:5000
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///.mlflow/mlflow.db --host 127.0.0.1 --port 5000
