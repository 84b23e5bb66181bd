# ves-streams: the two commands of the README are `make run` and `make test`.
# Everything else here is what they are built from.

PYTHON        ?= python3
VENV          ?= .venv
BIN           := $(VENV)/bin
# Kafka versions: the first is the default broker; integration tests run against all.
KAFKA_VERSION ?= 4.1.1
KAFKA_VERSIONS ?= 4.1.1 3.9.1
# plaintext, or sasl_ssl (TLS + SCRAM-SHA-512; `make kafka-up` then writes .run/kafka/client.env)
KAFKA_SECURITY ?= plaintext
PYTEST_ARGS   ?=

.PHONY: help venv run test test-unit test-integration kafka-up kafka-down kafka-fetch bench soak drills check wheel-smoke clean

help:
	@echo "make run         start a local Kafka, a local VES collector and a worker, and feed collectd data"
	@echo "make test        create .venv, fetch Kafka, run unit + integration + e2e tests"
	@echo "make kafka-up    start a single-node KRaft broker on localhost:9092 (KAFKA_VERSION=$(KAFKA_VERSION), KAFKA_SECURITY=plaintext|sasl_ssl)"
	@echo "make kafka-down  stop it"
	@echo "make bench       benchmarks (bench/), figures and ratios against a same-run baseline"
	@echo "make soak        N hosts for M minutes with faults injected (SOAK_ARGS='--minutes 60 --hosts 1000')"
	@echo "make drills      fault drills on a 3-broker cluster"
	@echo "make wheel-smoke build the wheel, install it in a fresh virtualenv, run the pipeline from an empty directory"

$(BIN)/ves-streams: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench]'
	@touch $@

venv: $(BIN)/ves-streams

kafka-fetch: venv
	$(BIN)/ves-streams kafka fetch --version $(KAFKA_VERSION)

kafka-up: venv
	$(BIN)/ves-streams kafka up --version $(KAFKA_VERSION) --security $(KAFKA_SECURITY)

kafka-down: venv
	$(BIN)/ves-streams kafka down

run: venv
	$(BIN)/ves-streams run --kafka-version $(KAFKA_VERSION)

# Unit, integration, end-to-end and drill tests; then the broker-version-sensitive
# tests (marker broker_version) again against the other pinned Kafka version. Tests marked open_bug reproduce bugs
# that are still open: `make drills` runs them, `make test` (and so CI) does not.
test: venv
	@for v in $(KAFKA_VERSIONS); do $(BIN)/ves-streams kafka fetch --version $$v || exit 1; done
	VES_STREAMS_TEST_KAFKA_VERSION=$(firstword $(KAFKA_VERSIONS)) $(BIN)/python -m pytest -m "not open_bug" $(PYTEST_ARGS)
	@for v in $(wordlist 2,99,$(KAFKA_VERSIONS)); do \
	  echo "== broker-version-sensitive tests against Kafka $$v =="; \
	  VES_STREAMS_TEST_KAFKA_VERSION=$$v $(BIN)/python -m pytest -m "broker_version and not drill and not open_bug" $(PYTEST_ARGS) || exit 1; \
	done

test-unit: venv
	$(BIN)/python -m pytest -m "not integration and not e2e and not drill" $(PYTEST_ARGS)

# A benchmark, not a test: hours without loss, stall or growth (bench/soak.py).
SOAK_ARGS ?= --minutes 60 --hosts 1000
soak: venv
	$(BIN)/ves-streams kafka fetch --version $(KAFKA_VERSION)
	$(BIN)/python -m bench.soak --kafka-version $(KAFKA_VERSION) $(SOAK_ARGS)

drills: venv
	VES_STREAMS_TEST_KAFKA_VERSION=$(KAFKA_VERSION) $(BIN)/python -m pytest -m drill $(PYTEST_ARGS)

bench: venv
	$(BIN)/ves-streams kafka fetch --version $(KAFKA_VERSION)
	VES_STREAMS_TEST_KAFKA_VERSION=$(KAFKA_VERSION) $(BIN)/python -m bench

# The wheel as a user installs it: .ci/wheel-smoke (also run by CI after `make test`).
wheel-smoke:
	PYTHON=$(PYTHON) KAFKA_VERSION=$(KAFKA_VERSION) .ci/wheel-smoke

check: venv
	@for f in topologies/*.yaml topologies/ves5/*.yaml; do $(BIN)/ves-streams check $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .run bench/results
