#!/usr/bin/env python3
"""A small existing web app for the console's proxy test: it knows nothing of Keel except the identity headers.

GET <anything> answers an HTML page that shows who the host says is calling (X-Keel-User, X-Keel-Tenant,
X-Keel-Roles), whether the signature checks out with the plugin's proxy key, and the X-Forged header if one arrived;
GET .../whoami answers the same as JSON. The page loads Keel's page bridge (/keel-page.js), as an app that wants to
call its own back end as the console's caller does. The key is read from --key-file on each request (the test writes it once
`keel plugins proxy-key` can tell it). Every request's headers are appended to --log as one JSON line.
Listens on 127.0.0.1 on a free port, prints "port N" once ready, serves until killed.

    app.py --key-file FILE --log FILE
"""
import argparse
import hashlib
import hmac
import html
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--key-file", required=True)
parser.add_argument("--log", required=True)
args = parser.parse_args()


def verified(method, target, h):
    """True when X-Keel-Signature is the HMAC-SHA256 the host makes with the plugin's key, and recent."""
    try:
        with open(args.key_file, encoding="utf-8") as f:
            key = f.read().strip()
        stamp = h.get("x-keel-timestamp", "")
        message = "\n".join([stamp, method, target, h.get("x-keel-user", ""), h.get("x-keel-tenant", ""),
                             h.get("x-keel-roles", "")])
        mac = hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(mac, h.get("x-keel-signature", "")) and abs(time.time() - int(stamp)) < 300
    except (OSError, ValueError):
        return False


class App(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        h = {k.lower(): v for k, v in self.headers.items()}
        seen = {"path": self.path, "user": h.get("x-keel-user", ""), "tenant": h.get("x-keel-tenant", ""),
                "roles": h.get("x-keel-roles", ""), "verified": verified("GET", self.path, h),
                "forged": h.get("x-forged", ""), "headers": h}
        with open(args.log, "a", encoding="utf-8") as f:
            f.write(json.dumps(seen) + "\n")
        if self.path.endswith("/whoami"):
            body, kind = json.dumps(seen).encode(), "application/json"
        else:
            labels = {"user": "X-Keel-User", "tenant": "X-Keel-Tenant", "roles": "X-Keel-Roles",
                      "verified": "signature verified with the proxy key", "forged": "X-Forged"}
            rows = "".join(f'<p>{labels[k]}: <b id="{k}">{html.escape(str(seen[k]).lower() if k == "verified" else seen[k])}</b></p>'
                           for k in labels)
            body = (f"<!doctype html><title>Wiki</title><script src=\"/keel-page.js\"></script><h1>Wiki, an existing app behind Keel's proxy</h1>"
                    f"<p>Who the host says is calling:</p>{rows}").encode()
            kind = "text/html; charset=utf-8"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), App)
print(f"port {server.server_address[1]}", flush=True)
server.serve_forever()
