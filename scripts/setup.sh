#!/usr/bin/env bash
# Prepares a checkout: Debian packages that are missing, a virtualenv in .venv, the package with
# its development extras. Safe to run again.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
apt_install() {
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null 2>&1; then
  apt_install python3 python3-venv python3-pip
fi
if [ ! -x .venv/bin/python ]; then
  if ! "$python" -m venv .venv >/dev/null 2>&1; then
    rm -rf .venv
    apt_install python3-venv
    "$python" -m venv .venv
  fi
fi
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[dev]'
  touch "$stamp"
fi
scripts/services.sh install
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  # The JavaScript client's package (clients/js) is packed and tested in Node.
  apt_install nodejs npm
fi
if [ "${1:-}" = "--browser" ] && ! command -v chromium >/dev/null 2>&1; then
  # The browser tests drive Debian's Chromium headless; Playwright brings no browser of its own.
  apt_install chromium
fi
