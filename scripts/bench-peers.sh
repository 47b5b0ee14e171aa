#!/usr/bin/env bash
# `make bench-peers`: NeoTenantApi side by side with PocketBase and SpiceDB on this machine.
# Starts the local services, builds the release server (or reuses it: BENCH_NO_BUILD=1),
# installs the peers from the Go module proxy when missing (pinned versions below) and wrk
# from Debian, then runs scripts/bench/peers.sh (three scenarios, alternating sides).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
POCKETBASE_VERSION="${POCKETBASE_VERSION:-v0.36.8}"
SPICEDB_VERSION="${SPICEDB_VERSION:-v1.56.2}"

scripts/devstack.sh up
if ! command -v wrk >/dev/null; then
  echo "[bench-peers] installing wrk (Debian)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
command -v go >/dev/null || { echo "[bench-peers] Go is needed to install the peers" >&2; exit 1; }
GOBIN_DIR="$(go env GOBIN)"; GOBIN_DIR="${GOBIN_DIR:-$(go env GOPATH)/bin}"
# One package at a time, niced: the peers' builds are large and the machine may be small.
[ -x "$GOBIN_DIR/base" ] || GOFLAGS=-p=1 nice -n 10 \
  go install "github.com/pocketbase/pocketbase/examples/base@$POCKETBASE_VERSION"
[ -x "$GOBIN_DIR/spicedb" ] || GOFLAGS=-p=1 nice -n 10 \
  go install "github.com/authzed/spicedb/cmd/spicedb@$SPICEDB_VERSION"
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build --release -q -p neotenant
PB_BIN="$GOBIN_DIR/base" SPICEDB_BIN="$GOBIN_DIR/spicedb" NT_ROOT="$ROOT" \
  exec bash scripts/bench/peers.sh
