#!/usr/bin/env bash
# Creates (once) and prints the path of the project's virtual environment.
#
#   hack/ensure-venv.sh EXTRAS      e.g. operator,test; `dev` adds the dev tools (dev/, twlegal-dev)
#
# The environment lives outside the repository, keyed by the Python version, the extras and a hash
# of pyproject.toml, so a fresh clone reuses it; the project itself is (re)installed editable
# from the current checkout every time, which takes a few seconds.
set -euo pipefail
extras=${1:-operator,test}
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
cache=${TWLEGAL_CACHE:-$HOME/.cache/twlegal}
# Keyed by what is installed (the dependency lists), not by the rest of pyproject.toml.
deps=$(for f in "$root/pyproject.toml" "$root/dev/pyproject.toml"; do
         sed -n '/^dependencies = \[/,/^\[project.scripts\]/p' "$f"; done | sha256sum | cut -c1-12)
# `dev` is not an extra of the product: it is the dev/ distribution, installed beside it.
product_extras=$(echo "$extras" | tr ',' '\n' | grep -vx dev | paste -sd, -)
editables=(-e "$root[$product_extras]")
case ",$extras," in *,dev,*) editables+=(-e "$root/dev") ;; esac
prefix=$("$python" -c 'import sys; print("py%d%d" % sys.version_info[:2])')-$(echo "$extras" | tr ',' '-')
venv=${TWLEGAL_VENV:-$cache/venv/$prefix-$deps}
if [ ! -f "$venv/.complete" ]; then
  echo "[ensure-venv] creating $venv" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  log=$(mktemp)
  if ! { "$venv/bin/pip" install --upgrade "pip>=24" "setuptools>=69,<81" && \
         "$venv/bin/pip" install "${editables[@]}"; } >"$log" 2>&1; then
    tail -40 "$log" >&2; rm -f "$log"; exit 1
  fi
  rm -f "$log"
  touch "$venv/.complete"
  # Environments for older dependency lists of the same extras are dead weight (GBs with torch).
  for old in "$cache/venv/$prefix"-*; do
    [ "$old" != "$venv" ] && rm -rf "$old"
  done
fi
# Point the editable install at this checkout (CI clones into a new folder each run).
log=$(mktemp)
if ! "$venv/bin/pip" install --no-deps --no-build-isolation "${editables[@]}" >"$log" 2>&1; then
  cat "$log" >&2; rm -f "$log"; exit 1
fi
rm -f "$log"
echo "$venv"
