#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests: `start` initialises one in a temporary folder, runs it as the
# postgres user on a free port of 127.0.0.1 (password logins over TCP) with a role and a database for the
# tests, and prints the variables the tests read; `stop DIR` stops it and removes the folder.
#   eval "$(bash .ci/postgres.sh start)"; swift test; bash .ci/postgres.sh stop "$TURNSTILE_TEST_POSTGRES_DIR"
set -euo pipefail
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_postgres() { if [ "$(id -un)" = postgres ]; then bash -c "$1"; else su postgres -s /bin/bash -c "$1"; fi; }
case "${1:-}" in
start)
    dir=$(mktemp -d /tmp/turnstile-pg.XXXXXX)
    chown postgres "$dir"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_postgres "'$bin/initdb' -D '$dir/data' -U postgres --auth-local=trust --auth-host=scram-sha-256" >"$dir/initdb.log"
    as_postgres "'$bin/pg_ctl' -D '$dir/data' -l '$dir/server.log' -w -o \"-p $port -k '$dir' -c listen_addresses=127.0.0.1\" start" >/dev/null
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
*)
    echo "usage: postgres.sh start | stop DIR" >&2
    exit 2
    ;;
esac
