#!/usr/bin/env bash
# Installs what pgha needs on a Debian machine: PostgreSQL 15, etcd, HAProxy, PgBouncer, ZooKeeper's jars, vip-manager
# (Debian packages) and pgha itself with its Python dependencies in ./.venv. Safe to run again: it only installs what is
# missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

packages=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || packages+=(postgresql-15)
command -v etcd >/dev/null 2>&1 || packages+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || packages+=(etcd-client)
command -v haproxy >/dev/null 2>&1 || packages+=(haproxy)
[ -x /usr/sbin/pgbouncer ] || command -v pgbouncer >/dev/null 2>&1 || packages+=(pgbouncer)
[ -f /usr/share/java/zookeeper.jar ] && command -v java >/dev/null 2>&1 || packages+=(zookeeperd)
command -v vip-manager >/dev/null 2>&1 || packages+=(vip-manager)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || packages+=(python3-venv)
if [ "${#packages[@]}" -gt 0 ]; then
  echo "installing Debian packages: ${packages[*]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
  # pgha runs its own ZooKeeper (pgha up, tests) on other ports: the service zookeeperd starts is not needed
  if [[ " ${packages[*]} " == *" zookeeperd "* ]] && command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl disable --now zookeeper >/dev/null 2>&1 || true
  fi
  # the tests run vip-manager themselves (tests/integration/test_vip.py); the unconfigured service is not needed
  if [[ " ${packages[*]} " == *" vip-manager "* ]] && command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl disable --now vip-manager >/dev/null 2>&1 || true
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
echo "pgha installed: $(.venv/bin/pgha --version)"
