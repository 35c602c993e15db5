# Thin wrappers over the project's own scripts (kubebuilder-style targets).
# Python lives in the project-local virtualenv .venv, made by the targets that need it.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/bin:$(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help venv tools ollama cluster-up cluster-down cluster-status images test test-unit test-integration fuzz lint crds demo bench clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements/constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "==> installing Python dependencies into $(VENV) (first run downloads torch: several GB, cached by pip)"
	$(PY) -m pip install -q --upgrade pip
	@# Not -q: each package is named as pip collects it, so the minutes of a cold install are never silent.
	$(PY) -m pip install --progress-bar off -c requirements/constraints.txt -e '.[dev]'
	@touch $@

venv: $(STAMP) ## Create .venv with the project and its dev/runtime extras

tools: ## Build the pinned cluster binaries from Go modules into bin/ (cached in ~/.cache/sdc-llm)
	$(PYTHON) hack/tools.py

ollama: ## Build ollama (CPU) from its Go module: bin/ollama, and build/ollama/ollama for images/ollama.Dockerfile
	$(PYTHON) hack/ollama_build.py

cluster-up: tools ## Start the local control plane; kubeconfig at .cluster/kubeconfig
	$(PYTHON) hack/cluster.py up

cluster-down: ## Stop exactly what cluster-up started
	$(PYTHON) hack/cluster.py down

images: venv ollama cluster-up ## Build images/*.Dockerfile here (local Debian base) and load them into the real node
	$(PY) hack/images.py

cluster-status:
	@$(PYTHON) hack/cluster.py status

fuzz: venv ## Schemathesis: >1300 random requests generated from the orchestrator's OpenAPI schema, 0 server errors expected
	SDC_FUZZ_RANDOM=1 SDC_FUZZ_EXAMPLES=150 $(PY) -m pytest tests/orchestrator/test_schema_fuzz.py -s -p no:cacheprovider

lint: venv ## ruff, mypy (strict), import-linter, CRD drift check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

crds: venv ## Regenerate crds/ (and the chart's copy) from the pydantic models
	$(PY) -m sdc_operator.crd --write

test: venv tools ollama lint ## The test command: lint, unit and integration tests (brings the local cluster up if needed)
	$(PY) hack/run_tests.py tests

test-unit: venv ## Unit tests only (no cluster)
	$(PY) hack/run_tests.py tests -m "not integration"

test-integration: venv tools ## Integration tests only
	$(PY) hack/run_tests.py tests -m integration

demo: venv tools ollama ## The stack end to end on the local cluster
	$(PY) hack/demo.py

BENCH_VENV := .venv-bench
$(BENCH_VENV)/.installed: requirements/bench.txt
	@test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	@echo "==> installing the peer (LiteLLM's proxy) into $(BENCH_VENV): its pins differ from ours"
	$(BENCH_VENV)/bin/pip install -q -r requirements/bench.txt
	@touch $@

bench: venv tools $(BENCH_VENV)/.installed ## Benchmarks: tables printed and written to benchmarks/REPORT.md
	$(PY) benchmarks/run.py

clean: cluster-down ## Remove local state (keeps the tool cache in ~/.cache/sdc-llm)
	rm -rf .cluster bin
