#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests: `start` initialises one in a temporary folder, runs it as the
# postgres user on a free port of 127.0.0.1 (password logins over TCP) with a role and a database for the
# tests, and prints the variables the tests read; `stop DIR` stops it and removes the folder; `down DIR` and
# `up DIR` stop and start it again on the same port with its data (an outage, for the tests).
#   eval "$(bash .ci/postgres.sh start)"; swift test; bash .ci/postgres.sh stop "$TURNSTILE_TEST_POSTGRES_DIR"
set -euo pipefail
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_postgres() { if [ "$(id -un)" = postgres ]; then (cd / && bash -c "$1"); else (cd / && su postgres -s /bin/bash -c "$1"); fi; }
serve() { as_postgres "'$bin/pg_ctl' -D '$1/data' -l '$1/server.log' -w -o \"-p $(cat "$1/port") -k '$1' -c listen_addresses=127.0.0.1\" start" >/dev/null 2>"$1/pg_ctl.err"; }
case "${1:-}" in
start)
    dir=$(mktemp -d /tmp/turnstile-pg.XXXXXX)
    chown postgres "$dir"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    echo "$port" >"$dir/port"
    as_postgres "'$bin/initdb' -D '$dir/data' -U postgres --auth-local=trust --auth-host=scram-sha-256" >"$dir/initdb.log"
    serve "$dir"
    printf '%s\n' "CREATE ROLE turnstile LOGIN CREATEDB PASSWORD 'turnstile-test';" "CREATE DATABASE turnstile_test OWNER turnstile;" >"$dir/setup.sql"
    chown postgres "$dir/setup.sql"
    as_postgres "psql -h '$dir' -p $port -U postgres -q -v ON_ERROR_STOP=1 -f '$dir/setup.sql'"
    echo "export TURNSTILE_TEST_POSTGRES_URL=postgres://turnstile@127.0.0.1:$port/turnstile_test"
    echo "export TURNSTILE_TEST_POSTGRES_PASSWORD=turnstile-test"
    echo "export TURNSTILE_TEST_POSTGRES_DIR=$dir"
    ;;
stop)
    dir="${2:?stop needs the folder of the cluster}"
    as_postgres "'$bin/pg_ctl' -D '$dir/data' -m fast -w stop" >/dev/null || true
    rm -rf "$dir"
    ;;
down)
    as_postgres "'$bin/pg_ctl' -D '${2:?down needs the folder of the cluster}/data' -m fast -w stop" >/dev/null
    ;;
up)
    serve "${2:?up needs the folder of the cluster}"
    ;;
*)
    echo "usage: postgres.sh start | stop DIR | down DIR | up DIR" >&2
    exit 2
    ;;
esac
