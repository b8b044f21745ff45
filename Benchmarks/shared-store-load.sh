#!/usr/bin/env bash
# Load figures for several receivers on one shared PostgreSQL store: two `turnstile serve` instances behind no
# balancer, each posted to by its own wrk (32 connections each, 64 in all) with distinct signed 1 KB
# deliveries, each instance dispatching to a jsonl handler meanwhile. In the same run and with the same wrk
# script: one instance on the same PostgreSQL, one on a durable SQLite file, and nginx answering a fixed 200;
# then `turnstile bench pipeline` against the same database (the store's rate next to plain multi-row
# INSERTs of the same rows with the same batching).
#
#   bash Benchmarks/shared-store-load.sh [SECONDS]     (default 15; needs wrk, nginx, PostgreSQL, python3)
#
# PostgreSQL: a throwaway cluster made by .ci/postgres.sh (as the postgres user), stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
. Benchmarks/nginx-reference.sh
seconds=${1:-15}
work=$(mktemp -d)
eval "$(bash .ci/postgres.sh start)"
cleanup() {
    for pid in $(cat "$work"/*.pid 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
    [ -f "$work/nginx/nginx.pid" ] && kill -QUIT "$(cat "$work/nginx/nginx.pid")" 2>/dev/null || true
    bash .ci/postgres.sh stop "$TURNSTILE_TEST_POSTGRES_DIR"
    rm -rf "$work"
}
trap cleanup EXIT
export PGPASSWORD="$TURNSTILE_TEST_POSTGRES_PASSWORD"

swift build -c release >/dev/null
bin=$PWD/.build/release/turnstile
secret="load-test-secret-$(date +%s)"
printf '%s' "$secret" > "$work/secret"
write_config() { # NAME STORE
    cat > "$work/$1.json" <<JSON
{"store":"$2","listen":"127.0.0.1:0","max_body_bytes":65536,
 "postgres":{"password":"env:PGPASSWORD","pool_size":8},
 "providers":{"github":{"scheme":"github","secrets":["file:secret"]}},
 "dispatch":{"batch_size":256},
 "handlers":[{"name":"all","type":"jsonl","path":"$work/$1.jsonl","events":["*"]}]}
JSON
}

start() { # NAME : runs serve with NAME.json, stderr to NAME.log, and sets port_NAME to the port it announces
    (cd "$work" && exec "$bin" serve --config "$work/$1.json" 2>"$work/$1.log") &
    echo $! > "$work/$1.pid"
    for _ in $(seq 200); do
        local port
        port=$(grep -o '127\.0\.0\.1:[0-9]*' "$work/$1.log" 2>/dev/null | head -1 | grep -o '[0-9]*$' || true)
        if [ -n "$port" ]; then printf -v "port_$1" '%s' "$port"; return 0; fi
        sleep 0.05
    done
    echo "$1 did not start" >&2; cat "$work/$1.log" >&2; exit 1
}

stop() { kill -TERM "$(cat "$work/$1.pid")"; wait "$(cat "$work/$1.pid")" 2>/dev/null || true; rm -f "$work/$1.pid"; }

run_wrk() { # PORT CONNECTIONS SALT OUTPUT
    SECRET="$secret" RUN_SALT="$3" wrk -t1 -c"$2" -d"$seconds"s --latency -s Benchmarks/post-deliveries.lua "http://127.0.0.1:$1" > "$4"
}

rate() { awk '/Requests\/sec/ {print $2}' "$1"; }
# CPU seconds (user + system) used so far by the given processes, and by every PostgreSQL server process.
cpu() { for pid in "$@"; do awk '{print $14 + $15}' "/proc/$pid/stat"; done | awk -v hz="$(getconf CLK_TCK)" '{t += $1} END {printf "%.3f", t / hz}'; }
pg_cpu() { cpu $(pgrep -u postgres -f "postgres" | tr '\n' ' '); }
cpu_line() { # LABEL REQUESTS TURNSTILE_CPU_BEFORE AFTER PG_BEFORE AFTER
    python3 -c "n=float('$2'); print('  %-50s turnstile %5.0f µs, PostgreSQL %5.0f µs of CPU per delivery' % ('$1', ($4-$3)*1e6/n, ($6-$5)*1e6/n))"
}
p99() { awk '/^ +99%/ {print $2}' "$1"; }
non2xx() { awk '/Non-2xx/ {print $NF}' "$1" | grep . || echo 0; }

pg_url="$TURNSTILE_TEST_POSTGRES_URL"
write_config a "$pg_url"
write_config b "$pg_url"
write_config single "$pg_url"
write_config sqlite "sqlite:$work/turnstile.db"

# Two instances on one PostgreSQL, each with its own wrk, at once.
start a
start b
t0=$(cpu "$(cat "$work/a.pid")" "$(cat "$work/b.pid")"); p0=$(pg_cpu)
run_wrk "$port_a" 32 1 "$work/a.wrk" &
wrk_a=$!
run_wrk "$port_b" 32 2 "$work/b.wrk"
wait "$wrk_a"
t1=$(cpu "$(cat "$work/a.pid")" "$(cat "$work/b.pid")"); p1=$(pg_cpu)
sleep 2 # let dispatch finish what is queued
depth=$(psql "$pg_url" -Atc "SELECT COUNT(*) FROM turnstile_events")
stop a
stop b
stored=$(psql "$pg_url" -Atc "SELECT COUNT(*) FROM turnstile_archive")
dispatched=$(cat "$work/a.jsonl" "$work/b.jsonl" 2>/dev/null | wc -l)

# One instance on the same PostgreSQL (a new schema each run would be fairer to the first; the tables only grew).
start single
s0=$(cpu "$(cat "$work/single.pid")"); q0=$(pg_cpu)
run_wrk "$port_single" 64 3 "$work/single.wrk"
s1=$(cpu "$(cat "$work/single.pid")"); q1=$(pg_cpu)
stop single

start sqlite
run_wrk "$port_sqlite" 64 4 "$work/sqlite.wrk"
stop sqlite

start_nginx "$work"
run_wrk "$nginx_port" 64 5 "$work/nginx.wrk"
stop_nginx "$work"

two=$(python3 -c "print('%.0f' % (float('$(rate "$work/a.wrk")') + float('$(rate "$work/b.wrk")')))")
nginx_rate=$(rate "$work/nginx.wrk")
share() { python3 -c "print('%.0f%%' % (100 * float('$1') / float('$nginx_rate')))"; }
echo
echo "wrk -c64 in all, ${seconds}s, distinct signed 1 KB POSTs, 127.0.0.1 ($(nproc) cores shared by wrk, Turnstile and PostgreSQL)"
printf '%-52s %8s req/s  %5s of nginx  p99 %-8s %s\n' "two serve instances, one PostgreSQL (A + B)" "$two" "$(share "$two")" \
    "$(p99 "$work/a.wrk")/$(p99 "$work/b.wrk")" "non-2xx $(non2xx "$work/a.wrk")+$(non2xx "$work/b.wrk")"
printf '%-52s %8s req/s  %5s of nginx  p99 %-8s %s\n' "one serve instance, the same PostgreSQL" "$(rate "$work/single.wrk")" \
    "$(share "$(rate "$work/single.wrk")")" "$(p99 "$work/single.wrk")" "non-2xx $(non2xx "$work/single.wrk")"
printf '%-52s %8s req/s  %5s of nginx  p99 %-8s %s\n' "one serve instance, SQLite file" "$(rate "$work/sqlite.wrk")" \
    "$(share "$(rate "$work/sqlite.wrk")")" "$(p99 "$work/sqlite.wrk")" "non-2xx $(non2xx "$work/sqlite.wrk")"
printf '%-52s %8s req/s\n' "nginx, fixed 200, 1 worker" "$nginx_rate"
echo "two instances: stored $stored deliveries, dispatched $dispatched across both, queue depth $depth after 2 s"
echo "CPU (user + system, from /proc/PID/stat; receivers dispatching meanwhile):"
cpu_line "two instances" "$(awk '/requests in/ {n += $1} END {print n}' "$work/a.wrk" "$work/b.wrk")" "$t0" "$t1" "$p0" "$p1"
cpu_line "one instance" "$(awk '/requests in/ {print $1}' "$work/single.wrk")" "$s0" "$s1" "$q0" "$q1"
echo
"$bin" bench pipeline --store "$pg_url" --count 20000 --runs 3
