#!/usr/bin/env bash
# Installs what the quickstart and the tests need when it is missing:
# redis-server/redis-cli and Python's venv module (Debian/Ubuntu packages, via
# apt-get as root or with sudo). The tests' Redis Cluster is made with
# redis-cli and their Sentinels are redis-server --sentinel, so nothing more;
# their Valkey server comes from PyPI (scripts/python-env.sh valkey). Rust (cargo) must already be installed
# (https://rustup.rs). Idempotent and quiet when everything is there.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
# promtool (lints /metrics, checks deploy/prometheus rules in the tests).
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# PostgreSQL (warehouse.kind = "postgres" tests and bench): a server on 127.0.0.1:5432.
command -v pg_isready >/dev/null 2>&1 && command -v psql >/dev/null 2>&1 || need+=(postgresql)
py=${PYTHON:-$(command -v python3.11 || command -v python3 || true)}
if [ -z "$py" ]; then
  need+=(python3 python3-venv python3-pip)
elif ! "$py" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  need+=(python3-venv)
fi

if [ ${#need[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-deps.sh: please install ${need[*]} with your package manager" >&2
    exit 1
  fi
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "ensure-deps.sh: missing ${need[*]}, and not root with no sudo to install them; as root, run:" >&2
      echo "  apt-get update && apt-get install -y --no-install-recommends ${need[*]}" >&2
      exit 1
    fi
    sudo="sudo"
  fi
  echo "ensure-deps.sh: installing ${need[*]}" >&2
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

py=${PYTHON:-$(command -v python3.11 || command -v python3 || true)}
if [ -n "$py" ] && ! "$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' >/dev/null 2>&1; then
  echo "ensure-deps.sh: warning: $py is Python $("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo '?'); the pinned test environments were resolved on Python 3.11" >&2
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "ensure-deps.sh: cargo not found; install Rust from https://rustup.rs" >&2
  exit 1
fi

# The tests connect to 127.0.0.1:5432 as postgres, database test, without a
# password: start the Debian cluster if nothing answers, create `test`, and
# trust local TCP logins of postgres to `test` (only that database).
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "ensure-deps.sh: starting PostgreSQL" >&2
  $sudo service postgresql start >&2 || $sudo pg_ctlcluster "$(ls /etc/postgresql | sort -V | tail -1)" main start >&2
  for _ in $(seq 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
fi
if ! psql -h 127.0.0.1 -U postgres -d test -Atc 'SELECT 1' >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  as_pg() { if [ "$(id -u)" -eq 0 ]; then su postgres -c "$*"; else sudo -u postgres sh -c "$*"; fi; }
  as_pg "psql -Atc \"SELECT 1 FROM pg_database WHERE datname = 'test'\" | grep -q 1 || createdb test" >&2
  hba=$(as_pg "psql -Atc 'SHOW hba_file'")
  if ! $sudo grep -q 'materializer tests' "$hba"; then
    echo "ensure-deps.sh: trusting 127.0.0.1 logins of postgres to database test in $hba" >&2
    $sudo sed -i '1i host test postgres 127.0.0.1/32 trust # materializer tests' "$hba"
    as_pg "psql -Atc 'SELECT pg_reload_conf()'" >/dev/null
  fi
fi
