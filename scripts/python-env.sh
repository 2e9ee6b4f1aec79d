#!/usr/bin/env bash
# Usage: scripts/python-env.sh NAME
# Creates (once) a Python virtualenv from tests/support/requirements-NAME.txt and
# prints the path of its python. The venv lives under
# ${MATERIALIZER_CACHE:-$HOME/.cache/materializer}/venvs/, keyed by a hash of the
# requirements file, so an edit to the file builds a fresh one. Safe to call from
# parallel tests: creation is serialised with flock.
set -euo pipefail
name=${1:?usage: python-env.sh NAME}
root=$(cd "$(dirname "$0")/.." && pwd)
req="$root/tests/support/requirements-$name.txt"
[ -f "$req" ] || { echo "python-env.sh: no $req" >&2; exit 2; }
cache=${MATERIALIZER_CACHE:-$HOME/.cache/materializer}
hash=$(sha256sum "$req" | cut -c1-12)
venv="$cache/venvs/$name-$hash"
mkdir -p "$cache/venvs"
if [ ! -f "$venv/.ready" ]; then
  exec 9>"$cache/venvs/.$name.lock"
  flock 9
  if [ ! -f "$venv/.ready" ]; then
    rm -rf "$venv"
    py=${PYTHON:-$(command -v python3.11 || command -v python3)}
    echo "python-env.sh: creating $venv (one-off, takes a minute or two)" >&2
    "$py" -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check --upgrade pip >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
    touch "$venv/.ready"
  fi
fi
echo "$venv/bin/python"
