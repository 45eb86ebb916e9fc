#!/usr/bin/env python3
"""A small existing web app for the console's proxy test: it knows nothing of Keel except the identity headers.

GET <anything> answers an HTML page that shows who the host says is calling (X-Keel-User, X-Keel-Tenant,
X-Keel-Roles), whether the signature checks out with the plugin's proxy key, and the X-Forged header if one arrived;
GET .../whoami (any query) answers the same as JSON. Two pages play the hostile app: GET .../setcookie sets a session cookie for
the whole origin (app_session, Path=/) and one for another plugin's app (toss, Path=/ext/other/app); GET
.../attack?other=PATH, sent with a policy asking for allow-same-origin, tries to read the console's token, storage
and cookies and to call the admin API, PATH/whoami?from=attack (another plugin's app) and its own whoami?from=attack (with
credentials), and shows what it got as JSON in #loot ("blocked" for what threw). The page loads Keel's page bridge (/keel-page.js), as an app that wants to
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
from urllib.parse import parse_qs, urlsplit

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
        extra = []
        if urlsplit(self.path).path.endswith("/whoami"):
            body, kind = json.dumps(seen).encode(), "application/json"
        elif self.path.endswith("/setcookie"):
            extra = [("Set-Cookie", "app_session=s3cret; Path=/"), ("Set-Cookie", "toss=planted; Path=/ext/other/app")]
            body, kind = b"<!doctype html><title>Cookies</title><p id='set'>set</p>", "text/html; charset=utf-8"
        elif "/attack?" in self.path:
            other = json.dumps(parse_qs(urlsplit(self.path).query).get("other", ["/"])[0])
            extra = [("Content-Security-Policy", "sandbox allow-scripts allow-same-origin")]
            body = ("<!doctype html><title>Attack</title><pre id='loot'></pre><script>(async () => {"
                    "const r = {origin: self.origin};"
                    "const read = (k, f) => { try { r[k] = String(f()); } catch (e) { r[k] = 'blocked'; } };"
                    "read('storage', () => sessionStorage.getItem('keel.token'));"
                    "read('parent', () => parent.sessionStorage.getItem('keel.token'));"
                    "read('top', () => top.document.cookie);"
                    "read('cookie', () => document.cookie);"
                    "const get = async (k, url) => { try { const x = await fetch(url, {credentials: 'include'});"
                    " r[k] = {status: x.status, body: (await x.text()).slice(0, 2000)}; } catch (e) { r[k] = 'blocked'; } };"
                    "await get('api', '/api/v1/plugins');"
                    f"await get('other', {other} + '/whoami?from=attack');"
                    "await get('own', 'whoami?from=attack');"
                    "document.getElementById('loot').textContent = JSON.stringify(r);"
                    "})();</script>").encode()
            kind = "text/html; charset=utf-8"
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
        for name, value in extra:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), App)
print(f"port {server.server_address[1]}", flush=True)
server.serve_forever()
