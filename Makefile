# NeoTenantApi: `make run` serves it, `make test` tests it (both start the local services).
SHELL := /bin/bash
CARGO ?= cargo
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
BIN := $(TARGET_DIR)/debug/neotenant
export NEOTENANT_CONFIG ?= neotenant.toml

.PHONY: up down status build plugins migrate run test lint fmt openapi bench bench-peers

## Local services (PostgreSQL 17, Redis 7) on loopback under .devstack/: install if missing, start.
up:
	@scripts/devstack.sh up

down:
	@scripts/devstack.sh down

status:
	@scripts/devstack.sh status

build:
	$(CARGO) build -p neotenant

## Example and test plugins (wasm32-wasip2 components) into plugins/dist/: the Rust ones,
## and py_webhook in Python (componentize-py from PyPI, installed under .devstack/).
PLUGINS := ticket webhook hostile
PLUGINS_TARGET := $(or $(CARGO_TARGET_DIR),plugins/target)
COMPONENTIZE_PY_DIR := $(CURDIR)/.devstack/componentize-py
COMPONENTIZE_PY := PYTHONPATH=$(COMPONENTIZE_PY_DIR) python3 -c 'import sys; from componentize_py import script; sys.exit(script())'

$(COMPONENTIZE_PY_DIR)/componentize_py:
	python3 -m pip install --quiet --disable-pip-version-check --target $(COMPONENTIZE_PY_DIR) componentize-py==0.25.1

plugins/dist/py_webhook.wasm: plugins/examples/py_webhook/app.py plugins/examples/py_webhook/plugin.json wit/plugin.wit | $(COMPONENTIZE_PY_DIR)/componentize_py
	@mkdir -p plugins/dist
	cd plugins/examples/py_webhook && $(COMPONENTIZE_PY) -d ../../../wit -w neotenant:plugin/integration@0.1.0 componentize app -o ../../dist/py_webhook.wasm >/dev/null
	cp plugins/examples/py_webhook/plugin.json plugins/dist/py_webhook.json

plugins: plugins/dist/py_webhook.wasm
	@rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
	@for p in $(PLUGINS); do \
	  (cd plugins && $(CARGO) build -q --release --target wasm32-wasip2 -p $$p) || exit 1; done
	@mkdir -p plugins/dist
	@for p in $(PLUGINS); do \
	  cp $(PLUGINS_TARGET)/wasm32-wasip2/release/$$p.wasm plugins/dist/ && \
	  cp plugins/examples/$$p/plugin.json plugins/dist/$$p.json || exit 1; done

migrate: up build
	$(BIN) migrate

## Serve on 127.0.0.1:8080 with two demo tenants.
run: up build plugins
	@$(BIN) migrate
	@$(BIN) tenant create demo-us --name "Demo US" --region us --isolation schema >/dev/null
	@$(BIN) tenant create demo-eu --name "Demo EU" --region eu --isolation database >/dev/null
	@scripts/usage.sh
	@exec $(BIN) serve

## The whole suite: formatting, unit tests and the integration tests against the real services.
test: up plugins
	$(CARGO) fmt --all -- --check
	$(CARGO) test --workspace --no-fail-fast

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## Regenerate the committed OpenAPI document (a test fails when it is stale).
openapi:
	$(CARGO) run -q -p neotenant -- openapi > docs/openapi.json

## Criterion micro-benchmarks, then HTTP load on loopback against tenant-scoped reads.
bench: up plugins
	$(CARGO) bench -p neotenant --bench auth -- --warm-up-time 1 --measurement-time 3
	$(CARGO) bench -p neotenant --bench rbac
	$(CARGO) bench -p neotenant --bench audit
	$(CARGO) bench -p neotenant --bench search
	$(CARGO) bench -p neotenant-runtime --bench plugin
	$(CARGO) bench -p neotenant-flags --bench eval
	@scripts/bench.sh
	@BENCH_NO_BUILD=1 scripts/bench-invitations.sh
	@BENCH_NO_BUILD=1 scripts/bench-flags.sh
	@BENCH_NO_BUILD=1 scripts/bench-notifications.sh
	@BENCH_NO_BUILD=1 scripts/bench-webhooks.sh

# NeoTenantApi beside PocketBase and SpiceDB (installed from the Go module proxy when missing).
bench-peers:
	@scripts/bench-peers.sh
