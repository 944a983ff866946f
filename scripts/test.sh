#!/usr/bin/env bash
# Runs every test: the pure core, the config and DCS contract suites, and the real-process integration tests
# (PostgreSQL, etcd). Run scripts/install.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || { echo "run scripts/install.sh first" >&2; exit 2; }
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@" tests
