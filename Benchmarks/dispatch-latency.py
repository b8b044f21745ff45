#!/usr/bin/env python3
"""Time from acknowledgement to handler start, at light load, through the real `turnstile serve`.

A client sends signed GitHub deliveries one at a time (one every --gap-ms) and notes when each 200 arrives;
serve's built-in `http` handler forwards each event to a receiver in this same process, which notes when the
request arrives. Both instants come from one monotonic clock, so the difference is the time from the 200 to
the handler's start (a negative value: the handler started before the 200 reached the client).

Usage: swift build -c release && python3 Benchmarks/dispatch-latency.py [--binary .build/release/turnstile]
       [--count 300] [--gap-ms 20]
"""
import argparse
import hashlib
import hmac
import http.client
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
GITHUB_SECRET = b"It's a Secret to Everybody"

arrived = {}
lock = threading.Lock()


class Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        now = time.perf_counter()
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        n = json.loads(body)["payload"]["n"]
        with lock:
            arrived.setdefault(n, now)
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default=os.path.join(ROOT, ".build/release/turnstile"))
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--gap-ms", type=float, default=20)
    args = parser.parse_args()

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    folder = tempfile.mkdtemp(prefix="turnstile-latency-")
    config = os.path.join(folder, "turnstile.json")
    with open(config, "w") as file:
        json.dump({
            "store": f"sqlite:{folder}/t.db", "listen": "127.0.0.1:0",
            "env_file": os.path.join(ROOT, "fixtures/secrets.env"),
            "providers": {"github": {"scheme": "github", "secrets": ["env:GITHUB_WEBHOOK_SECRET"]}},
            "handlers": [{"name": "forward", "type": "http", "url": f"http://127.0.0.1:{receiver.server_port}/hooks",
                          "secret": "env:FORWARD_SECRET", "events": ["*"]}],
        }, file)
    serve = subprocess.Popen([args.binary, "serve", "--config", config], stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "FORWARD_SECRET": SECRET})
    port = None
    for line in serve.stderr:
        if '"msg":"listening"' in line:
            port = int(json.loads(line)["address"].rsplit(":", 1)[1])
            break
    threading.Thread(target=lambda: [None for _ in serve.stderr], daemon=True).start()

    client = http.client.HTTPConnection("127.0.0.1", port)
    acknowledged = {}
    for n in range(args.count):
        body = json.dumps({"ref": "refs/heads/main", "n": n}).encode()
        signature = "sha256=" + hmac.new(GITHUB_SECRET, body, hashlib.sha256).hexdigest()
        headers = {"Content-Type": "application/json", "X-GitHub-Event": "push", "X-GitHub-Delivery": str(uuid.uuid4()),
                   "X-Hub-Signature-256": signature}
        client.request("POST", "/webhooks/github", body=body, headers=headers)
        response = client.getresponse()
        response.read()
        acknowledged[n] = time.perf_counter()
        assert response.status == 200, response.status
        time.sleep(args.gap_ms / 1000)
    deadline = time.time() + 30
    while len(arrived) < args.count and time.time() < deadline:
        time.sleep(0.05)
    serve.terminate()
    serve.wait()
    delays = [(arrived[n] - acknowledged[n]) * 1000 for n in range(args.count) if n in arrived]
    print(f"dispatch latency: {len(delays)} of {args.count} events, one every {args.gap_ms:g} ms, "
          f"from the 200 to the http handler's request arriving")
    print(f"  median {statistics.median(delays):.2f} ms, p90 {percentile(delays, 0.9):.2f} ms, "
          f"p99 {percentile(delays, 0.99):.2f} ms, max {max(delays):.2f} ms")


if __name__ == "__main__":
    main()
