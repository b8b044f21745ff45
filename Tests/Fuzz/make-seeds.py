#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets from the shipped fixtures and a few hand-made edge cases.

Run from the repository root: python3 Tests/Fuzz/make-seeds.py. Seeds are named seed-*; inputs the fuzzer
found (crashes, once fixed) are kept beside them under their own names and never overwritten.
"""
import glob
import hashlib
import json
import os

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    folder = os.path.join(ROOT, target)
    os.makedirs(folder, exist_ok=True)
    name = "seed-" + hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(folder, name), "wb") as handle:
        handle.write(data)


deliveries = []
for path in sorted(glob.glob("fixtures/**/*.json", recursive=True)) + sorted(glob.glob("fixtures/**/*.ndjson", recursive=True)):
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    records = [text] if path.endswith(".json") else [line for line in text.splitlines() if line.strip()]
    for record in records:
        try:
            value = json.loads(record)
        except ValueError:
            continue
        if isinstance(value, dict) and "provider" in value:
            deliveries.append((record, value))

selectors = {"synthflow": 0, "autify": 1, "sync": 2, "stripe": 3, "github": 4, "svix": 5}
for record, value in deliveries[:60]:
    put("delivery", record)
    body = value.get("body", "")
    put("json", body)
    put("stringify", body)
    headers = value.get("headers", {})
    head = "".join("%s: %s\n" % (name, text) for name, text in headers.items())
    request = "POST /webhooks/%s HTTP/1.1\r\nHost: x\r\n" % value["provider"]
    request += "".join("%s: %s\r\n" % (name, text) for name, text in headers.items())
    request += "Content-Length: %d\r\n\r\n%s" % (len(body.encode()), body)
    put("http-parser", request)
    selector = selectors.get(value["provider"], 6)
    put("verify", bytes([selector]) + (head + "\n" + body).encode())

# HTTP edge cases: chunked bodies, the chunk sizes that once overflowed, pipelining, blank lines.
chunked = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
for tail in ["5;x=y\r\nhello\r\n0\r\nT: v\r\n\r\n", "8000000000000000\r\n", "FFFFFFFFFFFFFFFF\r\n", "1\r\na\r\n7FFFFFFFFFFFFFFF\r\n"]:
    put("http-parser", chunked + tail)
put("http-parser", "\r\n\r\nGET /healthz HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.0\r\n\r\n")
put("http-parser", "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}")

for text in ['{"a":[1,2.5e3,-0,true,null,"\\u00e9\\ud83d\\ude00"],"b":{}}', '{"id":1,"id":2}', "[" * 300 + "]" * 300,
             '{"finished_at":1e400,"id":"x"}', '{"status":"COMPLETED","id":"g1","metrics":{}}', '"\\ud800"']:
    put("json", text)
    put("stringify", text)

with open("fixtures/turnstile.json", encoding="utf-8") as handle:
    put("config", handle.read())
for text in ['{"providers":{"s":{"scheme":"sync","secrets":["env:FUZZ_SECRET"]}}}',
             '{"providers":{"s":{"scheme":"sync","secrets":["env:FUZZ_SECRET"],"tolerance_seconds":300,"retention_seconds":10}}}',
             '{"store":"sqlite:a.db","store":"sqlite:b.db","providers":{}}',
             '{"queue_bound":99999999999999999999,"providers":{}}',
             '{"providers":{"h":{"scheme":"hmac","secrets":["env:FUZZ_SECRET"],"hmac":{"signature_header":"X-S","algorithm":"sha256","encoding":"hex","signed":"body"}}}}']:
    put("config", text)

for text in ["", "00ff", "0G", "aGVsbG8=", "aGVsbG8", "aGVsbG8==", "////", "AB=C", "deadBEEF"]:
    put("encoding", text)
