#!/usr/bin/env python3
"""Measures what each attack on `turnstile serve` gets and costs, with a light load served at the same time.

For each attack: what was sent, what it got, the receiver's peak RSS, and the p50/p99 of a light load (20 signed
GitHub deliveries a second on one keep-alive connection, opened before the attack). Runs the release binary on
127.0.0.1 with the fixtures' providers; every loop is bounded in count and time.

    swift build -c release && python3 Benchmarks/resource-bounds.py [--only NAME]
"""
import argparse
import hashlib
import hmac
import json
import os
import resource
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, ".build/release/turnstile")
SECRET = None
for line in open(os.path.join(ROOT, "fixtures/secrets.env")):
    if line.startswith("GITHUB_WEBHOOK_SECRET="):
        SECRET = line.split("=", 1)[1].strip().encode()


def signed_github(index):
    body = json.dumps({"ref": "refs/heads/main", "n": index, "at": time.time()}).encode()
    signature = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    head = ("POST /webhooks/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\nX-GitHub-Delivery: bounds-%d-%f\r\n"
            "X-Hub-Signature-256: %s\r\nContent-Length: %d\r\n\r\n" % (index, time.time(), signature, len(body)))
    return head.encode() + body


def read_response(sock, timeout=10):
    """Reads one response; returns its status or None when the peer closed or the time ran out."""
    data = b""
    deadline = time.time() + timeout
    while b"\r\n\r\n" not in data:
        left = deadline - time.time()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            return None
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status


class Server:
    def __init__(self, folder, descriptors=None, extra=None):
        descriptors = descriptors or resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        fixtures = json.load(open(os.path.join(ROOT, "fixtures/turnstile.json")))
        config = {"store": "sqlite:%s/turnstile.db" % folder, "listen": "127.0.0.1:0",
                  "env_file": os.path.join(ROOT, "fixtures/secrets.env"), "providers": fixtures["providers"],
                  "handlers": [{"name": "all", "type": "jsonl", "path": folder + "/events.jsonl", "events": ["*"]}]}
        config.update(extra or {})
        path = os.path.join(folder, "turnstile-%d.json" % descriptors)
        json.dump(config, open(path, "w"))
        self.log = open(os.path.join(folder, "serve-%d.log" % descriptors), "w+")
        self.process = subprocess.Popen(["prlimit", "--nofile=%d:%d" % (descriptors, descriptors), BINARY, "serve", "--config", path],
                                        stderr=self.log, stdout=subprocess.DEVNULL, cwd=ROOT)
        self.port = None
        for _ in range(500):
            self.log.seek(0)
            for line in self.log:
                if '"msg":"listening"' in line:
                    self.port = int(json.loads(line)["address"].rsplit(":", 1)[1])
            if self.port:
                break
            time.sleep(0.02)
        assert self.port, "serve did not start"

    def rss_mib(self):
        for line in open("/proc/%d/status" % self.process.pid):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0

    def cpu_seconds(self):
        fields = open("/proc/%d/stat" % self.process.pid).read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        self.process.terminate()
        self.process.wait(30)


class LightLoad(threading.Thread):
    """20 signed deliveries a second on one keep-alive connection; latencies of the 200s."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.latencies = []
        self.failures = 0
        self.running = True
        self.index = 0

    def run(self):
        while self.running:
            started = time.time()
            self.index += 1
            try:
                self.sock.sendall(signed_github(self.index))
                status = read_response(self.sock, timeout=10)
            except OSError:
                status = None
            if status == 200:
                self.latencies.append(time.time() - started)
            else:
                self.failures += 1
            time.sleep(max(0, 0.05 - (time.time() - started)))

    def stop(self):
        self.running = False
        self.join(15)
        ordered = sorted(self.latencies) or [float("nan")]
        pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000
        return len(self.latencies), self.failures, pick(0.5), pick(0.99)


def connect(port, count):
    sockets = []
    for _ in range(count):
        try:
            sockets.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        except OSError:
            break
    return sockets


def closed(sock):
    try:
        sock.setblocking(False)
        return sock.recv(65536) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def one_request(port, data, timeout=30):
    sock = socket.create_connection(("127.0.0.1", port))
    started = time.time()
    try:
        sock.sendall(data)
    except OSError:
        pass
    status = read_response(sock, timeout)
    return status, time.time() - started


# Each attack returns (what was sent, what it got); the harness samples RSS and runs the light load meanwhile.

def idle_connections(server):
    sockets = connect(server.port, 10000)
    time.sleep(5)
    still = sum(1 for s in sockets if not closed(s))
    return "10,000 idle connections, held 5 s", "%d accepted and open" % still


def slowloris(server):
    sockets = connect(server.port, 1000)
    for s in sockets:
        s.sendall(b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\n")
    started = time.time()
    while time.time() - started < 12:
        for s in sockets:
            try:
                s.send(b"X")
            except OSError:
                pass
        time.sleep(1)
    gone = sum(1 for s in sockets if closed(s))
    return "1,000 connections sending a head at 1 byte/s for 12 s", "%d closed by the 10 s header timeout" % gone


def huge_content_length(server):
    status, seconds = one_request(server.port, b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Length: 2147483648\r\n\r\n")
    return "Content-Length: 2147483648, no body", "%s in %.1f ms, before any body byte" % (status, seconds * 1000)


def many_headers(server):
    head = b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 100000 + b"\r\n"
    status, seconds = one_request(server.port, head)
    return "100,000 header lines (600 KB)", "%s in %.1f ms" % (status, seconds * 1000)


def huge_signature(server):
    head = b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\nX-Hub-Signature-256: sha256=" + b"a" * (1 << 20) + b"\r\nContent-Length: 2\r\n\r\n{}"
    status, seconds = one_request(server.port, head)
    return "a 1 MiB X-Hub-Signature-256 header", "%s in %.1f ms" % (status, seconds * 1000)


def deep_json(server):
    # Sync's JSON.stringify fallback parses the body of a delivery whose raw bytes did not verify.
    body = b"[" * 100000 + b"]" * 100000
    head = ("POST /webhooks/sync HTTP/1.1\r\nHost: x\r\nSync-Signature: t=%d,v1=%s\r\nContent-Length: %d\r\n\r\n"
            % (int(time.time()), "0" * 64, len(body))).encode()
    status, seconds = one_request(server.port, head + body)
    return "100,000-level nested JSON to Sync (200 KB, forged signature)", "%s in %.1f ms" % (status, seconds * 1000)


def one_byte_chunks(server):
    body = b"1\r\nx\r\n" * (1 << 20) + b"0\r\n\r\n"
    status, seconds = one_request(server.port, b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body, 120)
    return "1 MiB in 1-byte chunks (6 MB on the wire)", "%s in %.2f s" % (status, seconds)


def unfinished_bodies(server):
    sockets = connect(server.port, 300)
    payload = b"x" * ((4 << 20) - 1)
    sent = [0] * len(sockets)
    for s in sockets:
        s.sendall(b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (4 << 20))
        s.setblocking(False)
    started = time.time()
    while time.time() - started < 8:
        for index, s in enumerate(sockets):
            if sent[index] < len(payload):
                try:
                    sent[index] += s.send(payload[sent[index]:sent[index] + 262144])
                except (BlockingIOError, OSError):
                    pass
        time.sleep(0.01)
    open_count = sum(1 for s in sockets if not closed(s))
    return ("300 connections × 4 MiB bodies minus the last byte, pushed for 8 s",
            "%d MiB went into the sockets; the receiver holds at most its 256 MiB budget, the rest waits in the kernel; %d still open"
            % (sum(sent) >> 20, open_count))


def never_reading(server):
    """GET /metrics pipelined on one connection for 30 s, never reading an answer."""
    s = socket.create_connection(("127.0.0.1", server.port))
    s.setblocking(False)
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 1000
    sent = 0
    started = time.time()
    while time.time() - started < 30:
        try:
            sent += s.send(request)
        except (BlockingIOError, OSError):
            time.sleep(0.01)
    requests = sent // len(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    s.close()
    return ("one connection pipelining GET /metrics for 30 s, never reading",
            "%d requests went into the socket (%d KiB), then it stopped taking them: at most 256 KiB of its answers wait in the receiver"
            % (requests, sent >> 10))


ATTACKS = [("idle", idle_connections), ("slowloris", slowloris), ("content-length", huge_content_length),
           ("headers", many_headers), ("signature", huge_signature), ("nested-json", deep_json),
           ("chunks", one_byte_chunks), ("unfinished", unfinished_bodies), ("never-reading", never_reading)]


def measure(name, attack, server):
    load = LightLoad(server.port)
    load.start()
    time.sleep(1)
    peak = server.rss_mib()
    result = {}

    def run():
        result["value"] = attack(server)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    while worker.is_alive():
        peak = max(peak, server.rss_mib())
        worker.join(0.1)
    time.sleep(0.5)
    peak = max(peak, server.rss_mib())
    served, failed, p50, p99 = load.stop()
    sent, got = result["value"]
    alive = server.process.poll() is None
    print("| %s | %s | %.0f MiB | %d served, %d failed; p50 %.1f ms, p99 %.1f ms |%s" % (
        sent, got, peak, served, failed, p50, p99, "" if alive else " **the server died**"), flush=True)


def descriptor_limit(folder):
    server = Server(folder, descriptors=256)
    try:
        load = LightLoad(server.port)
        load.start()
        time.sleep(1)
        sockets = connect(server.port, 400)
        before = server.cpu_seconds()
        time.sleep(5)
        cpu = server.cpu_seconds() - before
        peak = server.rss_mib()
        for s in sockets:
            s.close()
        time.sleep(1)
        status, _ = one_request(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 10)
        served, failed, p50, p99 = load.stop()
        print("| 400 connections against a 256-descriptor limit, held 5 s | %.2f s of CPU in 5 s; after they close, a new client gets %s |"
              " %.0f MiB | %d served, %d failed; p50 %.1f ms, p99 %.1f ms |" % (cpu, status, peak, served, failed, p50, p99), flush=True)
    finally:
        server.stop()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", help="run one attack: " + ", ".join(name for name, _ in ATTACKS) + ", descriptors")
    options = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    folder = tempfile.mkdtemp(prefix="turnstile-bounds-")
    print("| sent | got | peak RSS | light load meanwhile |")
    print("| --- | --- | --- | --- |")
    for name, attack in ATTACKS:
        if options.only and options.only != name:
            continue
        server = Server(folder)
        try:
            measure(name, attack, server)
        finally:
            server.stop()
    if not options.only or options.only == "descriptors":
        descriptor_limit(folder)


if __name__ == "__main__":
    main()
