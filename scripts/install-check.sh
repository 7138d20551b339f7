#!/usr/bin/env bash
# Installs the package as a new user would: with this machine's own python3 and the pip that came
# with it (not upgraded), into a fresh virtualenv, from the checkout (not editable). Then imports
# every module of the packages operations and hub, and runs `operations <command> --help` for
# every command the CLI's parser knows. Any failure stops it with a message and a non-zero status.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}

fail() {
  echo "install-check: FAILED: $*" >&2
  exit 1
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" -m venv "$work/venv" || fail "$python -m venv"
venv_python="$work/venv/bin/python"
echo "install-check: $("$venv_python" --version), $("$venv_python" -m pip --version)"
"$venv_python" -m pip install --quiet --no-cache-dir "$root" 2>"$work/pip.log" || {
  grep -v "is ignored: it is neither a file nor a directory" "$work/pip.log" >&2 || true
  fail "pip install $root"
}

# From an empty directory, so that the checkout's own packages cannot be imported instead.
cd "$work"
"$venv_python" - <<'PY' || fail "importing the installed modules"
import importlib
import pkgutil
import sys
import traceback

site = sys.prefix
failures = []
count = 0
for name in ("operations", "hub"):
    package = importlib.import_module(name)
    if not package.__file__ or not package.__file__.startswith(site):
        sys.exit(f"{name} was imported from {package.__file__}, not from the fresh install")
    modules = [name]
    for found in pkgutil.walk_packages(package.__path__, name + ".", onerror=failures.append):
        if found.name.rsplit(".", 1)[-1] != "__main__":  # __main__ runs the CLI
            modules.append(found.name)
    for module in modules:
        try:
            importlib.import_module(module)
            count += 1
        except Exception:
            failures.append(module)
            traceback.print_exc()
if failures:
    sys.exit(f"could not import: {', '.join(dict.fromkeys(map(str, failures)))}")
print(f"install-check: imported {count} modules of operations and hub")
PY

"$venv_python" - <<'PY' || fail "the browser client's files in the installed package"
from pathlib import Path

from hub.page import CLIENT_FILES, STATIC

for name in CLIENT_FILES:  # what GET /client/{name} serves
    path = Path(STATIC, "client", name)
    if not path.is_file() or path.stat().st_size == 0:
        raise SystemExit(f"{path} is missing: GET /client/{name} would answer 404")
print(f"install-check: GET /client/ has {', '.join(CLIENT_FILES)}")
PY

"$venv_python" - <<'PY' || fail "the default message catalogue in the installed package"
from operations.amqp.catalogue import Catalogue
from operations.settings import DEFAULT_MESSAGES_FILE

catalogue = Catalogue.load(DEFAULT_MESSAGES_FILE)
print(f"install-check: the default catalogue {DEFAULT_MESSAGES_FILE.name} has {len(list(catalogue))} entries")
PY

commands=$("$venv_python" -c "from operations.cli import commands; print(' '.join(commands()))") ||
  fail "listing the CLI's commands"
[ -n "$commands" ] || fail "the CLI lists no commands"
for command in $commands; do
  "$work/venv/bin/operations" "$command" --help >"$work/help.txt" 2>&1 || {
    cat "$work/help.txt" >&2
    fail "operations $command --help"
  }
  grep -q "usage: operations $command" "$work/help.txt" || fail "operations $command --help printed no usage"
done
echo "install-check: operations $commands: --help works for each"
echo "install-check: passed"
