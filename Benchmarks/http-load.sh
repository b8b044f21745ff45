#!/usr/bin/env bash
# Load figures for `turnstile serve` against the targets of issue 13, each in the same run as its reference:
# wrk posting distinct signed 1 KB deliveries at 64 connections on 127.0.0.1, every 200 durable
# (synchronous=FULL), a jsonl handler dispatching meanwhile. Each run measures, one after another:
#   nginx       nginx answering a fixed 200 with one worker (the rate reference)
#   durable     serve on an empty SQLite file
#   large       serve on a copy of a store holding 5 million live nonces and 1 million archived deliveries
#               (built once by `turnstile bench large-store --keep`, kept in /tmp for a day)
#   memory      serve on an in-memory SQLite store (the whole pipeline, no disk, not durable)
#   reference   Turnstile's HTTP server answering a fixed 200 (`turnstile bench http-reference`)
# and prints the medians over the runs: rates, p99, share of nginx, receiver CPU per delivery from
# /proc/PID/task/*/schedstat (all threads, and by thread), bytes written to storage per delivery
# (/proc/PID/io write_bytes, less what went to the jsonl file and the log), and the queue depth sampled
# every second (dispatch keeping up: under one second of arrivals at the end).
#
#   bash Benchmarks/http-load.sh [SECONDS] [RUNS]     (default 15 and 3; needs wrk, nginx, python3)
#   RSS=1 bash Benchmarks/http-load.sh                also a 60-second durable run sampling RSS
#
# Every request is a new delivery: the wrk script signs each body it makes with OpenSSL's HMAC (LuaJIT FFI).
set -euo pipefail
cd "$(dirname "$0")/.."
. Benchmarks/nginx-reference.sh
seconds=${1:-15}
runs=${2:-3}
connections=64
threads=2
work=$(mktemp -d)
trap 'kill $(cat "$work/serve.pid" 2>/dev/null) 2>/dev/null || true; [ -f "$work/nginx/nginx.pid" ] && kill -QUIT $(cat "$work/nginx/nginx.pid") 2>/dev/null || true; rm -rf "$work"' EXIT

swift build -c release >/dev/null
bin=.build/release/turnstile
secret="load-test-secret-$(date +%s)"
printf '%s' "$secret" > "$work/secret"

large_template=${LARGE_STORE:-/tmp/turnstile-large-store.db}
if [ ! -f "$large_template" ] || [ -n "$(find "$large_template" -mmin +1440 2>/dev/null)" ]; then
    rm -f "$large_template" "$large_template-wal" "$large_template-shm"
    echo "building the large store at $large_template (once a day)" >&2
    "$bin" bench large-store --keep "$large_template" --runs 1 --count 1000 >/dev/null
fi

write_config() { # STORE
    cat > "$work/turnstile.json" <<JSON
{"store":"$1","listen":"127.0.0.1:0","max_body_bytes":65536,
 "providers":{"github":{"scheme":"github","secrets":["file:secret"]}},
 "dispatch":{"batch_size":256},
 "handlers":[{"name":"all","type":"jsonl","path":"$work/events.jsonl","events":["*"]}]}
JSON
}

start() { # COMMAND... : runs it with stderr to serve.log and waits for the port it announces
    rm -f "$work/events.jsonl"
    "$@" 2>"$work/serve.log" &
    echo $! > "$work/serve.pid"
    for _ in $(seq 400); do
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

schedstat() { # PID: per thread name, nanoseconds on a core and waiting for one (/proc/PID/task/*/schedstat)
    for task in /proc/"$1"/task/*; do echo "$(tr ' ' _ < "$task/comm") $(cat "$task/schedstat")"; done |
        awk '{on[$1] += $2; wait[$1] += $3} END {for (name in on) printf "%s %.0f %.0f\n", name, on[name], wait[name]}' | sort
}

size() { stat -c %s "$1" 2>/dev/null || echo 0; }
written() { awk '/^write_bytes/ {print $2}' "/proc/$1/io"; }
depth() { curl -s "http://127.0.0.1:$port/metrics" | awk '/^turnstile_queue_depth / {print $2}'; }

durable_run() { # NAME STORE-PATH RUN: serve on the SQLite file, with CPU, bytes and queue depth
    local name=$1 path=$2 run=$3 out="$work/$1.$3"
    write_config "sqlite:$path"
    start "$bin" serve --config "$work/turnstile.json"
    local pid; pid=$(cat "$work/serve.pid")
    sleep 1
    schedstat "$pid" > "$out.sched0"
    local bytes0 jsonl0 log0
    bytes0=$(written "$pid"); jsonl0=$(size "$work/events.jsonl"); log0=$(size "$work/serve.log")
    ( for _ in $(seq "$seconds"); do sleep 1; depth; done ) > "$out.depths" &
    local sampler=$!
    TIMEFORMAT="%U %S"
    { time run_wrk "http://127.0.0.1:$port" "$seconds" > "$out.wrk"; } 2> "$out.wrkcpu"
    wait "$sampler"
    schedstat "$pid" > "$out.sched1"
    depth >> "$out.depths"
    sleep 2
    depth > "$out.settled"
    # Bytes after the settle, so the checkpoint of the run's WAL is counted too.
    echo "$(( $(written "$pid") - bytes0 - ($(size "$work/events.jsonl") - jsonl0) - ($(size "$work/serve.log") - log0) ))" > "$out.bytes"
    grep -c '"status":"200"' "$work/serve.log" > "$out.count" || true
    stop
}

for run in $(seq "$runs"); do
    echo "run $run/$runs" >&2
    start_nginx "$work"
    run_wrk "http://127.0.0.1:$nginx_port" "$seconds" > "$work/nginx.$run.wrk"
    stop_nginx "$work"

    rm -f "$work"/turnstile.db*
    durable_run durable "$work/turnstile.db" "$run"
    rm -f "$work"/turnstile.db*

    cp "$large_template" "$work/large.db"; sync
    durable_run large "$work/large.db" "$run"
    rm -f "$work"/large.db*

    write_config "sqlite::memory:"
    start "$bin" serve --config "$work/turnstile.json"
    run_wrk "http://127.0.0.1:$port" "$seconds" > "$work/memory.$run.wrk"
    stop

    start "$bin" bench http-reference --listen 127.0.0.1:0
    run_wrk "http://127.0.0.1:$port" "$seconds" > "$work/reference.$run.wrk"
    stop
done

python3 - "$work" "$runs" "$seconds" "$connections" "$threads" "$(nproc)" <<'PY'
import re, statistics, sys
work, runs, seconds, connections, threads, cores = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
def read(path): return open(f"{work}/{path}").read()
def latency(text, pct):
    value, unit = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
def wrk(name, run):
    text = read(f"{name}.{run}.wrk")
    return {"rate": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)), "p99": latency(text, 99),
            "p50": latency(text, 50), "requests": int(re.search(r"(\d+) requests in", text).group(1))}
def sched(name, run):
    before = {l.split()[0]: list(map(int, l.split()[1:])) for l in read(f"{name}.{run}.sched0").splitlines()}
    threads = {}
    for line in read(f"{name}.{run}.sched1").splitlines():
        parts = line.split()
        thread = re.sub(r".*(default-qos|overcommit)$", "swift-tasks", parts[0])
        on = int(parts[1]) - before.get(parts[0], [0, 0])[0]
        threads[thread] = threads.get(thread, 0) + on
    return threads
med = statistics.median
names = ["nginx", "durable", "large", "memory", "reference"]
results = {n: [wrk(n, r) for r in range(1, runs + 1)] for n in names}
nginx = med(x["rate"] for x in results["nginx"])
figures = {}
for name in ["durable", "large"]:
    per_run = []
    for r in range(1, runs + 1):
        served = int(read(f"{name}.{r}.count").strip() or 0)
        threads_ns = sched(name, r)
        depths = [int(float(d)) for d in read(f"{name}.{r}.depths").split() if d not in ("NaN",)]
        per_run.append({"cpu": sum(threads_ns.values()) / served / 1000, "threads": {t: v / served / 1000 for t, v in threads_ns.items()},
                        "bytes": int(read(f"{name}.{r}.bytes")) / served, "served": served,
                        "depth_end": depths[-1] if depths else -1, "depth_max": max(depths) if depths else -1,
                        "settled": int(float(read(f"{name}.{r}.settled").strip() or -1)),
                        "wrk": sum(map(float, read(f"{name}.{r}.wrkcpu").split())) * 1e6 / wrk(name, r)["requests"]})
    figures[name] = per_run

print(f"wrk -t{threads} -c{connections} -d{seconds}s --latency, distinct signed 1 KB POSTs, 127.0.0.1, {cores} cores; medians of {runs} runs")
print(f"{'':46} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'of nginx':>9}")
labels = {"durable": "turnstile serve, SQLite file, durable 200s", "large": "  same, store with 5M nonces + 1M archived",
          "memory": "turnstile serve, SQLite in memory (no disk)", "reference": "turnstile HTTP server, fixed 200",
          "nginx": "nginx, fixed 200, 1 worker"}
for name in ["durable", "large", "memory", "reference", "nginx"]:
    rows = results[name]
    print(f"{labels[name]:46} {med(x['rate'] for x in rows):9,.0f} {med(x['p50'] for x in rows):8.2f} {med(x['p99'] for x in rows):8.2f} "
          f"{100 * med(x['rate'] / wrk('nginx', i + 1)['rate'] for i, x in enumerate(rows)):8.0f}%")
d = figures["durable"]
cpu = med(x["cpu"] for x in d)
share = med(results["durable"][i]["rate"] / results["nginx"][i]["rate"] for i in range(runs))
p99 = med(x["p99"] for x in results["durable"])
large_share = med(results["large"][i]["rate"] / results["durable"][i]["rate"] for i in range(runs))
bytes_per = med(x["bytes"] for x in d)
rate = med(x["rate"] for x in results["durable"])
depth_end = med(x["depth_end"] for x in d)
def verdict(ok): return "met" if ok else "not met"
print()
print("targets (durable run on the empty store unless said)")
print(f"  receiver CPU per durable delivery, all threads   {cpu:8.1f} µs     target <= 45 µs      {verdict(cpu <= 45)}")
print(f"  durable rate / nginx                             {100 * share:8.0f} %      target >= 35 %       {verdict(share >= 0.35)}")
print(f"  p99 latency                                      {p99:8.2f} ms     target < 10 ms       {verdict(p99 < 10)}")
print(f"  large store / empty store rate                   {100 * large_share:8.0f} %      target >= 80 %       {verdict(large_share >= 0.8)}")
print(f"  large store p99                                  {med(x['p99'] for x in results['large']):8.2f} ms")
print(f"  bytes written to storage per delivery            {bytes_per:8,.0f} B      target <= 4,096 B    {verdict(bytes_per <= 4096)}")
print(f"  queue depth at the end / 2 s later (max)         {depth_end:8.0f} / {med(x['settled'] for x in d):.0f} ({med(x['depth_max'] for x in d):.0f})"
      f"   target: under 1 s of arrivals ({rate:,.0f})   {verdict(depth_end < rate)}")
print(f"  large store: CPU {med(x['cpu'] for x in figures['large']):.1f} µs, bytes {med(x['bytes'] for x in figures['large']):,.0f} B per delivery")
print(f"  wrk's own CPU per request (the load generator shares the cores): {med(x['wrk'] for x in d):.1f} µs")
print()
print("receiver CPU per durable delivery by thread (µs; swift-tasks: dispatch and handlers, ts-commit: group commit,")
print("ts-http-loop: HTTP, verification, log line, ts-checkpoint: WAL checkpoints):")
names = sorted({t for x in d for t in x["threads"]}, key=lambda t: -med(x["threads"].get(t, 0) for x in d))
for t in names:
    value = med(x["threads"].get(t, 0) for x in d)
    if value >= 0.5: print(f"  {t:18} {value:6.1f}")
PY

if [ "${RSS:-0}" = 1 ]; then
    echo
    echo "60-second run, durable receiver RSS every 10 s (KiB):"
    rm -f "$work"/turnstile.db*
    write_config "sqlite:$work/turnstile.db"
    start "$bin" serve --config "$work/turnstile.json"
    pid=$(cat "$work/serve.pid")
    ( for _ in 1 2 3 4 5 6 7; do ps -o rss= -p "$pid" | tr -d ' '; sleep 10; done ) > "$work/rss.txt" &
    sampler=$!
    run_wrk "http://127.0.0.1:$port" 60 > "$work/long.wrk"
    wait "$sampler"
    stop
    awk '/Requests\/sec/ {print "turnstile serve, 60 s: " $2 " req/s"}' "$work/long.wrk"
    tr '\n' ' ' < "$work/rss.txt"; echo
fi
