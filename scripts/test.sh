#!/usr/bin/env bash
# Runs every test: the pure core, config, DCS contract suites, the REST API, the simulator's scenarios, and the
# real-process integration tests (PostgreSQL, etcd, ZooKeeper, HAProxy); then 10,000 seeded simulator schedules.
# Run scripts/install.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || { echo "run scripts/install.sh first" >&2; exit 2; }
.venv/bin/python -m pytest -q -p no:cacheprovider "$@" tests
# Every invariant (safety and convergence) gates CI.
.venv/bin/python -m pgha sim --schedules 10000 --seed 1 --workers 2 --gate all --show 1
