#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for a team's tracking server and Optuna studies, or for CI.
#
#   scripts/postgres.sh start DIR [PORT]   initdb into DIR (if new) and start on 127.0.0.1:PORT
#                                          (default 5432); creates databases mlflow and optuna
#   scripts/postgres.sh stop DIR           stop it
#   scripts/postgres.sh url DIR [PORT]     print the base URL (postgresql://postgres@127.0.0.1:PORT)
#
# Runs the server as the postgres user when started by root (PostgreSQL refuses to run as root).
# No systemd needed. For a shared team server set PG_LISTEN (e.g. 0.0.0.0) and edit DIR/pg_hba.conf.
set -euo pipefail
cmd=${1:?usage: postgres.sh start|stop|url DIR [PORT]}
dir=${2:?usage: postgres.sh start|stop|url DIR [PORT]}
port=${3:-5432}
listen=${PG_LISTEN:-127.0.0.1}
bin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1)" 2>/dev/null || true)
[ -x "$bin/initdb" ] || bin=$(dirname "$(command -v initdb || echo /nonexistent/initdb)")
if [ ! -x "$bin/initdb" ]; then
  echo "PostgreSQL server not found; install it (Debian: apt-get install postgresql)" >&2
  exit 1
fi
as_pg() { if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi; }

case "$cmd" in
  start)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    if [ ! -f "$dir/PG_VERSION" ]; then
      as_pg "$bin/initdb" -D "$dir" -U postgres -A trust >/dev/null
    fi
    as_pg "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -o "-p $port -k $dir -c listen_addresses=$listen" start >/dev/null
    for db in mlflow optuna; do
      as_pg "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$db'" | grep -q 1 \
        || as_pg "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -qc "CREATE DATABASE $db"
    done
    echo "postgresql://postgres@127.0.0.1:$port"
    ;;
  stop)
    [ -f "$dir/postmaster.pid" ] && as_pg "$bin/pg_ctl" -D "$dir" -m fast -w stop >/dev/null || true
    ;;
  url)
    echo "postgresql://postgres@127.0.0.1:$port"
    ;;
  *)
    echo "usage: postgres.sh start|stop|url DIR [PORT]" >&2
    exit 2
    ;;
esac
