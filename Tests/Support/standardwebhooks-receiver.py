"""A receiver that checks Turnstile's http handler with the official Standard Webhooks library.

Prints its port on the first line of stdout, then serves until stdin closes. Each POST is verified with
standardwebhooks.Webhook(secret).verify; the answer is 204 when it verifies and 401 when it does not, and one
JSON line per request ({"verified": bool, "webhook_id": ..., "error": ...}) goes to the log file.
Usage: python3 standardwebhooks-receiver.py LOG_FILE  (the whsec_ secret in STANDARD_WEBHOOKS_SECRET)
"""
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

secret = os.environ["STANDARD_WEBHOOKS_SECRET"]
log_path = sys.argv[1]
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        headers = {name.lower(): value for name, value in self.headers.items()}
        entry = {"webhook_id": headers.get("webhook-id")}
        try:
            Webhook(secret).verify(body, headers)
            entry["verified"] = True
            status = 204
        except Exception as error:  # the library raises WebhookVerificationError; anything else is a failure too
            entry["verified"] = False
            entry["error"] = str(error)
            status = 401
        with lock, open(log_path, "a") as log:
            log.write(json.dumps(entry) + "\n")
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
sys.stdin.read()
server.shutdown()
