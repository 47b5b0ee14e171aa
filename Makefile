# NeoTenantApi: `make run` serves it, `make test` tests it (both start the local services).
SHELL := /bin/bash
CARGO ?= cargo
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
BIN := $(TARGET_DIR)/debug/neotenant
export NEOTENANT_CONFIG ?= neotenant.toml

.PHONY: up down status build plugins sdks migrate run test lint fmt openapi bench bench-peers soak chaos fuzz fuzz-api schemathesis

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

## Client SDKs generated from docs/openapi.json into sdks/build/ (see sdks/README.md):
## TypeScript (@hey-api/openapi-ts, compiled and type-checked with tsc, as is tests/sdk/flow.mjs
## against it) and Python (openapi-python-client). The generators come from npm and PyPI into
## .devstack/sdk-tools/, installed when missing or when a version below changes.
SDK_TOOLS := $(CURDIR)/.devstack/sdk-tools
HEY_API_OPENAPI_TS_VERSION := 0.95.0
TYPESCRIPT_VERSION := 5.9.3
TYPES_NODE_VERSION := 20.19.43
OPENAPI_PYTHON_CLIENT_VERSION := 0.29.1
HTTPX_VERSION := 0.28.1
ATTRS_VERSION := 25.4.0
SDK_NODE_BIN := $(SDK_TOOLS)/node/node_modules/.bin
SDK_NODE_STAMP := $(SDK_TOOLS)/node/.stamp-$(HEY_API_OPENAPI_TS_VERSION)-$(TYPESCRIPT_VERSION)-$(TYPES_NODE_VERSION)
SDK_PYGEN_STAMP := $(SDK_TOOLS)/python-gen/.stamp-$(OPENAPI_PYTHON_CLIENT_VERSION)
# What the generated Python client imports at run time (PYTHONPATH=sdks/build/python:$(SDK_TOOLS)/python-lib).
SDK_PYLIB_STAMP := $(SDK_TOOLS)/python-lib/.stamp-$(HTTPX_VERSION)-$(ATTRS_VERSION)
SDK_PIP := PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-warn-conflicts
SDK_TS := sdks/build/typescript/.generated
SDK_TS_FLOW := sdks/build/.flow-checked
SDK_PY := sdks/build/python/.generated

$(SDK_NODE_STAMP):
	@echo "sdks: installing @hey-api/openapi-ts $(HEY_API_OPENAPI_TS_VERSION) and typescript $(TYPESCRIPT_VERSION) (npm)"
	@rm -rf $(SDK_TOOLS)/node && mkdir -p $(SDK_TOOLS)/node
	@npm install --prefix $(SDK_TOOLS)/node --save-exact --no-audit --no-fund --no-update-notifier --loglevel=error \
	  @hey-api/openapi-ts@$(HEY_API_OPENAPI_TS_VERSION) typescript@$(TYPESCRIPT_VERSION) @types/node@$(TYPES_NODE_VERSION) >/dev/null
	@touch $@

$(SDK_PYGEN_STAMP):
	@echo "sdks: installing openapi-python-client $(OPENAPI_PYTHON_CLIENT_VERSION) (PyPI)"
	@rm -rf $(SDK_TOOLS)/python-gen
	@$(SDK_PIP) --target $(SDK_TOOLS)/python-gen openapi-python-client==$(OPENAPI_PYTHON_CLIENT_VERSION)
	@touch $@

$(SDK_PYLIB_STAMP):
	@rm -rf $(SDK_TOOLS)/python-lib
	@$(SDK_PIP) --target $(SDK_TOOLS)/python-lib httpx==$(HTTPX_VERSION) attrs==$(ATTRS_VERSION)
	@touch $@

$(SDK_TS): docs/openapi.json sdks/openapi-ts.config.mjs sdks/tsconfig.json $(SDK_NODE_STAMP)
	@rm -rf sdks/build/typescript
	@cd sdks && $(SDK_NODE_BIN)/openapi-ts --silent --no-log-file --file openapi-ts.config.mjs
	@echo '{"name": "@neotenant/sdk", "version": "0.1.0", "private": true, "type": "module", "main": "dist/index.js", "types": "dist/index.d.ts"}' \
	  > sdks/build/typescript/package.json
	@$(SDK_NODE_BIN)/tsc -p sdks/tsconfig.json
	@touch $@

$(SDK_TS_FLOW): tests/sdk/flow.mjs sdks/tsconfig.flow.json $(SDK_TS)
	@$(SDK_NODE_BIN)/tsc -p sdks/tsconfig.flow.json
	@touch $@

# openapi-python-client leaves out what it cannot model and says so: its report is kept in
# sdks/build/python-generate.log.
$(SDK_PY): docs/openapi.json sdks/python-config.yaml $(SDK_PYGEN_STAMP) $(SDK_PYLIB_STAMP)
	@rm -rf sdks/build/python && mkdir -p sdks/build
	@cd sdks && PYTHONPATH=$(SDK_TOOLS)/python-gen PATH="$(SDK_TOOLS)/python-gen/bin:$$PATH" \
	  python3 -m openapi_python_client generate --path ../docs/openapi.json --config python-config.yaml \
	  --output-path build/python >build/python-generate.log 2>&1 || { cat build/python-generate.log; exit 1; }
	@n=$$(grep -c -e '^WARNING' -e '^Unable to process' sdks/build/python-generate.log); [ "$$n" = 0 ] || \
	  echo "sdks: openapi-python-client skipped $$n part(s) of docs/openapi.json (sdks/build/python-generate.log)"
	@PYTHONPATH=sdks/build/python:$(SDK_TOOLS)/python-lib python3 -c 'import neotenant_client.models, neotenant_client.api'
	@touch $@

sdks: $(SDK_TS) $(SDK_TS_FLOW) $(SDK_PY)
	@:

migrate: up build
	$(BIN) migrate

## Serve on 127.0.0.1:8080 with two demo tenants.
run: up build plugins
	@$(BIN) migrate
	@$(BIN) tenant create demo-us --name "Demo US" --region us --isolation schema >/dev/null
	@$(BIN) tenant create demo-eu --name "Demo EU" --region eu --isolation database >/dev/null
	@scripts/usage.sh
	@exec $(BIN) serve

## The whole suite: formatting, unit tests, the integration tests against the real services
## (with every fuzz seed and past crash replayed), then a short Schemathesis run with a fixed
## seed against the debug server the tests built (3 cases per operation, as owner and as API
## key: no 5xx, only documented statuses; report in api-fuzz-report/). Body conformance stays
## with `make fuzz-api` until the event streams' documented schema describes SSE events.
test: up plugins sdks
	$(CARGO) fmt --all -- --check
	$(CARGO) test --workspace --no-fail-fast
	@API_FUZZ_NO_BUILD=1 API_FUZZ_MAX_EXAMPLES=3 API_FUZZ_SEED=$${API_FUZZ_SEED:-20261201} \
	  API_FUZZ_CHECKS=not_a_server_error,status_code_conformance scripts/api-fuzz.sh

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
	@BENCH_NO_BUILD=1 scripts/bench-changes.sh

## Bounded soak on loopback against a release build (SOAK_NO_BUILD=1 reuses it, SOAK_BIN=path runs
## another): mixed load for SOAK_SECS (600) at SOAK_RATE (200) req/s, then every write accounted
## for; report in soak-report/. `chaos` is the same with faults: Redis, Keycloak and PostgreSQL
## stopped and started, the webhook receiver down, the server killed (-9) and restarted.
soak: up
	@scripts/soak.sh

chaos: up
	@SOAK_FAULTS="$${SOAK_FAULTS:-redis,keycloak,postgres,receiver,kill}" scripts/soak.sh

## Coverage-guided fuzzing (cargo fuzz, libFuzzer) of the parsers of untrusted input: tokens,
## tenant JSON Schemas, search queries, plugin manifests, multipart uploads, CSV/JSON Lines
## imports, webhook URLs. FUZZ_SECS (60) per target; report in fuzz-report/. The seeds and
## every input that once crashed a target are replayed by `make test` (fuzzing/tests/replay.rs).
fuzz:
	@scripts/fuzz.sh

## Schemathesis against the served /openapi.json, authenticated as a fresh tenant's owner (bearer
## token) and with its API key (scripts/api-fuzz.sh; API_FUZZ_NO_BUILD=1 reuses the debug build,
## API_FUZZ_BIN=path runs another): API_FUZZ_MAX_EXAMPLES (50 here) test cases per operation,
## checked for 5xx and undocumented statuses and bodies; report in api-fuzz-report/.
## Schemathesis comes from PyPI into .devstack/schemathesis/, installed when missing or when
## the version below changes.
SCHEMATHESIS_VERSION := 4.32.5
SCHEMATHESIS_DIR := $(CURDIR)/.devstack/schemathesis
SCHEMATHESIS_STAMP := $(SCHEMATHESIS_DIR)/.stamp-$(SCHEMATHESIS_VERSION)

$(SCHEMATHESIS_STAMP):
	@echo "fuzz-api: installing schemathesis $(SCHEMATHESIS_VERSION) (PyPI)"
	@rm -rf $(SCHEMATHESIS_DIR)
	@$(SDK_PIP) --target $(SCHEMATHESIS_DIR) schemathesis==$(SCHEMATHESIS_VERSION)
	@touch $@

schemathesis: $(SCHEMATHESIS_STAMP)
	@:

fuzz-api: up $(SCHEMATHESIS_STAMP)
	@API_FUZZ_MAX_EXAMPLES="$${API_FUZZ_MAX_EXAMPLES:-50}" scripts/api-fuzz.sh

# NeoTenantApi beside PocketBase and SpiceDB (installed from the Go module proxy when missing).
bench-peers:
	@scripts/bench-peers.sh
