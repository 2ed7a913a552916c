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

# System packages some tests need, installed with apt-get (through sudo -n when not root).
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
export DEBIAN_FRONTEND=noninteractive
apt_install() {
    $SUDO apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1 \
        || { $SUDO apt-get update -q >/dev/null 2>&1 \
             && $SUDO apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1; } \
        || echo "warning: could not install $*; the tests needing it fail under CI=true" >&2
}
# promtool (Debian's prometheus package) checks the metrics and alert rules.
command -v promtool >/dev/null 2>&1 || apt_install prometheus
# Headless Chromium and its WebDriver drive the explain page's browser tests.
{ command -v chromium && command -v chromedriver; } >/dev/null 2>&1 \
    || apt_install chromium chromium-driver

# Redis on 127.0.0.1:6379 for the shared-cache tests; start one if it is installed but down.
if command -v redis-server >/dev/null 2>&1 && ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
        --logfile /tmp/cohortkv-redis.log >/dev/null || true
fi

echo "== ruff check";        .venv/bin/ruff check .
echo "== ruff format";       .venv/bin/ruff format --check .
echo "== mypy --strict";     .venv/bin/mypy --strict plugin adapters
echo "== pytest";            .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
