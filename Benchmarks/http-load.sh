#!/usr/bin/env bash
# Load figures for `turnstile serve`: wrk posting distinct signed 1 KB deliveries at 64 connections on
# 127.0.0.1 with durable (synchronous=FULL) acknowledgement; then, in the same run and with the same wrk
# script, three references: `serve` on an in-memory SQLite store (the whole pipeline with no disk writes, not
# durable), Turnstile's HTTP server answering a fixed 200 (`turnstile bench http-reference`: no
# verification, store or log), and nginx answering a fixed 200 with one worker. Then a 60-second run of the
# durable receiver sampling its RSS.
#
#   bash Benchmarks/http-load.sh [SECONDS]        (default 15; needs wrk, nginx, python3)
#
# Every request is a new delivery: the wrk script signs each body it makes with OpenSSL's HMAC (LuaJIT FFI).
set -euo pipefail
cd "$(dirname "$0")/.."
. Benchmarks/nginx-reference.sh
seconds=${1:-15}
connections=64
threads=2
work=$(mktemp -d)
trap 'kill $(cat "$work/serve.pid" 2>/dev/null) 2>/dev/null || true; [ -f "$work/nginx/nginx.pid" ] && kill -QUIT $(cat "$work/nginx/nginx.pid") 2>/dev/null || true; rm -rf "$work"' EXIT

swift build -c release >/dev/null
bin=.build/release/turnstile
secret="load-test-secret-$(date +%s)"
printf '%s' "$secret" > "$work/secret"
write_config() { # STORE
    cat > "$work/turnstile.json" <<JSON
{"store":"$1","listen":"127.0.0.1:0","max_body_bytes":65536,
 "providers":{"github":{"scheme":"github","secrets":["file:secret"]}},
 "dispatch":{"batch_size":256},
 "handlers":[{"name":"all","type":"jsonl","path":"$work/events.jsonl","events":["*"]}]}
JSON
}

start() { # COMMAND... : runs it with stderr to serve.log and waits for the port it announces
    rm -f "$work"/turnstile.db* "$work/events.jsonl"
    "$@" 2>"$work/serve.log" &
    echo $! > "$work/serve.pid"
    for _ in $(seq 100); do
        port=$(grep -o '127\.0\.0\.1:[0-9]*' "$work/serve.log" 2>/dev/null | head -1 | grep -o '[0-9]*$' || true)
        [ -n "$port" ] && return 0
        sleep 0.05
    done
    echo "$1 did not start" >&2; cat "$work/serve.log" >&2; exit 1
}

stop() { kill -TERM "$(cat "$work/serve.pid")"; wait "$(cat "$work/serve.pid")" 2>/dev/null || true; }

run_wrk() { # URL SECONDS
    SECRET="$secret" wrk -t$threads -c$connections -d"$2"s --latency -s Benchmarks/post-deliveries.lua "$1"
}

rate() { awk '/Requests\/sec/ {print $2}' "$1"; }

row() { # wrk output file, name
    printf '%-44s %12s req/s   p50 %-9s p99 %-9s %s of nginx\n' "$2" "$(rate "$1")" \
        "$(awk '/^ +50%/ {print $2}' "$1")" "$(awk '/^ +99%/ {print $2}' "$1")" \
        "$(python3 -c "print('%.0f%%' % (100 * float('$(rate "$1")') / float('$(rate "$work/nginx.wrk")')))")"
}

schedstat() { # PID: per thread name, nanoseconds on a core and waiting for one (/proc/PID/task/*/schedstat)
    for task in /proc/"$1"/task/*; do echo "$(tr ' ' _ < "$task/comm") $(cat "$task/schedstat")"; done |
        awk '{on[$1] += $2; wait[$1] += $3} END {for (name in on) print name, on[name], wait[name]}' | sort
}

write_config "sqlite:$work/turnstile.db"
start "$bin" serve --config "$work/turnstile.json"
schedstat "$(cat "$work/serve.pid")" > "$work/sched.before"
TIMEFORMAT="%U %S"
{ time run_wrk "http://127.0.0.1:$port" "$seconds" > "$work/turnstile.wrk"; } 2> "$work/wrk.cpu"
schedstat "$(cat "$work/serve.pid")" > "$work/sched.after"
stop
durable=$(grep -c '"status":"200"' "$work/serve.log" || true)

write_config "sqlite::memory:"
start "$bin" serve --config "$work/turnstile.json"
run_wrk "http://127.0.0.1:$port" "$seconds" > "$work/memory.wrk"
stop

start "$bin" bench http-reference --listen 127.0.0.1:0
run_wrk "http://127.0.0.1:$port" "$seconds" > "$work/reference.wrk"
stop

start_nginx "$work"
run_wrk "http://127.0.0.1:$nginx_port" "$seconds" > "$work/nginx.wrk"
stop_nginx "$work"

echo
echo "wrk -t$threads -c$connections -d${seconds}s --latency, distinct signed 1 KB POSTs, 127.0.0.1 ($(nproc) cores)"
row "$work/turnstile.wrk" "turnstile serve (SQLite file, durable 200s)"
row "$work/memory.wrk" "turnstile serve (SQLite in memory, no disk)"
row "$work/reference.wrk" "turnstile HTTP server, fixed 200"
row "$work/nginx.wrk" "nginx, fixed 200, 1 worker"
echo "durable 200s logged by the receiver: $durable"
requests=$(awk '/requests in/ {print $1}' "$work/turnstile.wrk")
echo "CPU per request in the durable run, by thread (µs on a core / µs waiting for a free core;"
echo "swift-tasks: dispatch and handlers, ts-commit: group commit, ts-http-loop: HTTP, verification, log):"
join "$work/sched.before" "$work/sched.after" | awk -v n="$requests" '
    {name = $1; sub(/.*(default-qos|overcommit)$/, "swift-tasks", name); on[name] += $4 - $2; wait[name] += $5 - $3; total += $4 - $2}
    END {
        for (name in on) if ((on[name] + wait[name]) / n >= 500) printf "  %-16s %6.1f / %6.1f\n", name, on[name] / n / 1000, wait[name] / n / 1000
        printf "  %-16s %6.1f\n", "receiver, all", total / n / 1000
    }'
awk -v n="$requests" '{printf "  %-16s %6.1f\n", "wrk (client)", ($1 + $2) * 1e6 / n}' "$work/wrk.cpu"

echo
echo "60-second run, durable receiver RSS every 10 s (KiB):"
write_config "sqlite:$work/turnstile.db"
start "$bin" serve --config "$work/turnstile.json"
pid=$(cat "$work/serve.pid")
( for _ in 1 2 3 4 5 6 7; do ps -o rss= -p "$pid" | tr -d ' '; sleep 10; done ) > "$work/rss.txt" &
sampler=$!
run_wrk "http://127.0.0.1:$port" 60 > "$work/long.wrk"
wait "$sampler"
stop
printf '%-44s %12s req/s   p50 %-9s p99 %s\n' "turnstile serve, 60 s" "$(rate "$work/long.wrk")" \
    "$(awk '/^ +50%/ {print $2}' "$work/long.wrk")" "$(awk '/^ +99%/ {print $2}' "$work/long.wrk")"
tr '\n' ' ' < "$work/rss.txt"; echo
