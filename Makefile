# twin.cluster: one entry point for set-up, lint, tests, benchmarks and the demo.
#   make demo   start the assistant on this machine (offline models)
#   make test   everything: lint, pytest, every molecule scenario
SHELL := /bin/bash
.DEFAULT_GOAL := help

export PATH := $(CURDIR)/.venv/bin:$(HOME)/.local/bin:$(PATH)
export CONTAINERS_CONF := $(CURDIR)/molecule/_shared/containers.conf
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export UV_PYTHON_DOWNLOADS := never
export TWIN_CACHE_DIR ?= $(HOME)/.cache/twin-cluster

SCENARIOS ?= $(sort $(notdir $(patsubst %/molecule.yml,%,$(wildcard molecule/*/molecule.yml))))
PYTEST_ARGS ?=
PXE_PYTEST_ARGS ?=

.PHONY: help deps check-fetch lint checks suites unit pxe-tests test-metal molecule test test-live bench demo llama-server collection clean evolve

help: ## List the targets.
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

deps: ## Install Debian packages, the Python environment and the test image (idempotent).
	@scripts/bootstrap.sh

check-fetch: deps ## Every network step of set-up again from empty caches (no compile).
	@scripts/check-fetch.sh

lint: deps ## ansible-lint (production profile), yamllint and ruff.
	yamllint -s .
	ansible-lint
	ruff check .
	ruff format --check .

unit: deps ## pytest: unit tests and real-component tests (not the live cluster ones, not tests/pxe).
	pytest -m "not live" --ignore=tests/pxe --durations=25 $(PYTEST_ARGS)

pxe-tests: deps ## pytest tests/pxe: the pxe_server role and real network boots (qemu, minutes).
	pytest -m "not live" $(PXE_PYTEST_ARGS) tests/pxe

# Not part of make test: a whole install under software emulation (tests/pxe/test_metal_install.py).
test-metal: deps ## A full unattended Debian install over the network in qemu, then SSH checks (long).
	pytest -m metal -s -rs --durations=0 $(PXE_PYTEST_ARGS) tests/pxe/test_metal_install.py

molecule: deps ## Every molecule scenario: converge, idempotence, verify.
	@set -e; for s in $(SCENARIOS); do echo "=== molecule test -s $$s"; start=$$(date +%s); \
	  molecule test -s $$s; echo "=== molecule $$s took $$(( $$(date +%s) - start )) s"; done

# On two cores most of the test time is waiting (on containers, emulated
# firmware, model servers, browsers), so the long suites run side by side:
# checks = the fresh-fetch check beside lint; suites = pytest beside molecule
# beside the network boots. The background targets' output follows the first's.
checks: deps ## make check-fetch and make lint side by side.
	@scripts/side-by-side.sh check-fetch lint

suites: deps ## make unit, make molecule and make pxe-tests side by side.
	@scripts/side-by-side.sh unit molecule pxe-tests

# The fresh-fetch check runs before anything can use a cached build, and each
# stage prints its time (CI reads them from its log).
TEST_STAGES := deps checks suites
test: ## Everything a change must pass: set-up, fresh-fetch check, lint, pytest, molecule, network boots.
	@set -e; for stage in $(TEST_STAGES); do start=$$(date +%s); \
	  $(MAKE) --no-print-directory $$stage; \
	  echo "make test: $$stage took $$(( $$(date +%s) - start )) s"; done

test-live: deps ## Checks against a real cluster (CONSUL_HTTP_ADDR, NOMAD_ADDR and tokens).
	pytest -m live -rs $(PYTEST_ARGS)

# bench_voice also runs its turns through a bare pipecat pipeline, for the side by side.
BENCH_VOICE_ARGS ?= --compare bare
bench: deps ## Benchmarks: write JSON under .cache/bench/ and print tables.
	@set -e; mkdir -p .cache/bench; for b in benchmarks/bench_*.py; do echo "=== $$b"; \
	  args=; if [[ $$b == */bench_voice.py ]]; then args="$(BENCH_VOICE_ARGS)"; fi; \
	  python $$b --out .cache/bench $$args; done

llama-server: deps ## Build llama.cpp's llama-server once (cached) and print its path.
	@scripts/build-llama-server.sh

demo: deps ## Start the assistant on this machine; prints the URL to open.
	@scripts/demo.sh

# EVOLVE_ARGS: prompt-evolve's options, e.g. --iterations 20 --resume
# --assistant-url http://127.0.0.1:8080/v1 --consul-key twin/prompts/system
# (prompt_engineering/README.md).
EVOLVE_ARGS ?=
evolve: deps ## Evolve TwinService's system prompt; publish it only if it wins on held-out cases.
	prompt-evolve $(EVOLVE_ARGS)

collection: deps ## Build the collection tarball.
	ansible-galaxy collection build --force --output-path .cache/dist

clean: ## Remove build outputs (keeps the model and llama.cpp caches).
	rm -rf .cache/dist .cache/bench .pytest_cache .ruff_cache
