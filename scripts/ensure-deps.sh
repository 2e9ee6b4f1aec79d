#!/usr/bin/env bash
# Installs what the quickstart and the tests need when it is missing:
# redis-server/redis-cli and Python's venv module (Debian/Ubuntu packages, via
# apt-get as root or with sudo). Rust (cargo) must already be installed
# (https://rustup.rs). Idempotent and quiet when everything is there.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
py=${PYTHON:-$(command -v python3.11 || command -v python3 || true)}
if [ -z "$py" ]; then
  need+=(python3 python3-venv python3-pip)
elif ! "$py" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  need+=(python3-venv)
fi

if [ ${#need[@]} -gt 0 ]; then
  echo "ensure-deps.sh: installing ${need[*]}" >&2
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-deps.sh: please install ${need[*]} with your package manager" >&2
    exit 1
  fi
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "ensure-deps.sh: cargo not found; install Rust from https://rustup.rs" >&2
  exit 1
fi
