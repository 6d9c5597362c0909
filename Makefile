# initsweep: `make sweep`, then `make ui` / `make best`; `make test` runs the suite.
SHELL := /bin/bash
MAKEFLAGS += --no-print-directory  # `make recommend ARGS=--json` prints only JSON, even nested
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXPERIMENT ?=
STUDY ?= default
TOP ?=
ARGS ?=
EXTRAS ?= dev
PORT ?= 5000
WORKERS ?= 1

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'
	@echo "  variables: EXPERIMENT=<preset> STUDY=<name> WORKERS=1 TOP=<k> ARGS=\"key=value ...\" PORT=<port> (ui 5000, dashboard 8080)"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[$(EXTRAS)]'
	@echo $(EXTRAS) > $(STAMP)

install: $(STAMP) ## create .venv and install the project (EXTRAS=dev,keras,torch,postgres)
	@grep -qx '$(EXTRAS)' $(STAMP) || { $(BIN)/pip install -q -e '.[$(EXTRAS)]' && echo $(EXTRAS) > $(STAMP); }

sweep: $(STAMP) ## run the default study (EXPERIMENT=<preset>, WORKERS=<processes>, ARGS="study.n_trials=16 ...")
	$(BIN)/python -m pipeline sweep --workers $(WORKERS) $(if $(EXPERIMENT),--experiment $(EXPERIMENT)) $(ARGS)

ui: $(STAMP) ## MLflow UI on 127.0.0.1:5000 (PORT=<port>), opened on STUDY's runs table
	$(BIN)/python -m pipeline ui --port $(PORT) study.name=$(STUDY) $(ARGS)

dashboard: $(STAMP) ## optuna-dashboard on 127.0.0.1:8080 over STUDY's storage (PORT=<port>)
	$(BIN)/python -m pipeline dashboard --port $(if $(filter file,$(origin PORT)),8080,$(PORT)) study.name=$(STUDY) $(ARGS)

example-data: $(STAMP) ## write examples/breast_cancer.npz, the data of EXPERIMENT=your_model
	$(BIN)/python examples/make_data.py

best: $(STAMP) ## write the top configs of STUDY to conf/best/<STUDY>.yaml (FORMAT=flax|keras|torch: snippets)
	$(BIN)/python -m pipeline best $(if $(TOP),--top $(TOP)) $(if $(FORMAT),--format $(FORMAT)) study.name=$(STUDY) $(ARGS)

report: $(STAMP) ## write runs/<STUDY>/report.html: one page, filters per network and initializer, figures inlined
	$(BIN)/python -m pipeline report study.name=$(STUDY) $(ARGS)

recommend: $(STAMP) ## which initializer per network of STUDY, at which LR, how sure (ARGS="--json")
	@$(BIN)/python -m pipeline recommend study.name=$(STUDY) $(ARGS)

train: $(STAMP) ## train one configuration: make train ARGS="model.depth=30 init.weights=he_normal"
	$(BIN)/python -m pipeline train $(ARGS)

coord-check: $(STAMP) ## mean |x| per layer vs width, steps 0-3, slopes + runs/coord_check/*.png (ARGS="model.kind=mlp init.parametrization=mup --json")
	$(BIN)/python -m pipeline coord-check $(ARGS)

transfer: $(STAMP) ## does STUDY's proxy-optimal learning rate / init stay best at larger sizes: table + runs/<STUDY>/transfer.png (ARGS="--json")
	$(BIN)/python -m pipeline transfer study.name=$(STUDY) $(ARGS)

bench: $(STAMP) ## sweep command vs plain loops, whole processes, cold and warm (ARGS="--workload mlp|residual|grid", "--scaling", "--device")
	$(BIN)/python -m benchmarks.bench $(ARGS)

# The suite tests the Keras, PyTorch and PostgreSQL paths too: make test installs their extras, as
# .ci/run does (a missing system package, Chromium or PostgreSQL, skips its tests with the reason).
test: EXTRAS = dev,keras,torch,postgres
test: install ## the whole test suite (installs every extra its tests use), two workers
	$(BIN)/python -m pytest -q -n 2 --dist loadscope

test-fast: EXTRAS = dev,keras,torch,postgres
test-fast: install ## the inner loop: the unit and engine tiers (tests/unit, tests/engine), two workers
	$(BIN)/python -m pytest -q -n 2 --dist loadscope -m "not e2e" tests/unit tests/engine

lint: $(STAMP) ## ruff check and format check
	$(BIN)/ruff check pipeline tests benchmarks examples
	$(BIN)/ruff format --check pipeline tests benchmarks examples

clean: ## remove runs/ (studies, MLflow store, caches)
	rm -rf runs

.PHONY: help install sweep ui dashboard example-data best report recommend train coord-check transfer bench test test-fast lint clean
