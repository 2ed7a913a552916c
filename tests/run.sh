#!/usr/bin/env bash
# The whole test suite from a fresh checkout: installs what the tests need into .venv, then
# lint, format check, strict typing and pytest. `.ci/run` runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'

echo "== ruff check";        .venv/bin/ruff check .
echo "== ruff format";       .venv/bin/ruff format --check .
echo "== mypy --strict";     .venv/bin/mypy --strict plugin adapters
echo "== pytest";            .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
