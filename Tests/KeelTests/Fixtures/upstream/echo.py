#!/usr/bin/env python3
"""A small upstream web app for the proxy tests: answers every request with JSON describing it (method, path with
query, headers, body, and the client's port as "peer"), except /slow (sleeps 3 s first), /redirect (302 to
/elsewhere), /huge (a 1 MiB response header), /stream?marker=FILE (chunked: "first", then, once FILE exists,
"second"), /whole (a chunked "hello" sent with its head in one write), /nothing (204, no length), /early (200 "early"
before the body is read, then closed), /big (200 KiB
of a repeating pattern, with its length, in one write) and /cookies (cookies for all the origin, another plugin's
paths and a domain, Clear-Site-Data, reporting headers for the whole origin, and a CSP asking for allow-same-origin). Listens on 127.0.0.1 on a
free port, prints "port N" once ready, serves until killed."""
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self):
        if self.path.endswith("/early"):
            # Answers at once, before reading the body, and closes.
            self.close_connection = True
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nearly")
            return
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        if self.path.endswith("/slow"):
            time.sleep(3)
        if self.path.endswith("/huge"):
            self.send_response(200)
            self.send_header("X-Huge", "x" * (1 << 20))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if "/stream?marker=" in self.path:
            marker = self.path.split("marker=", 1)[1]
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"5\r\nfirst\r\n")
            self.wfile.flush()
            for _ in range(200):
                if os.path.exists(marker):
                    break
                time.sleep(0.05)
            self.wfile.write(b"6\r\nsecond\r\n0\r\n\r\n")
            return
        if self.path.endswith("/whole"):
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"5\r\nhello\r\n0\r\n\r\n")
            return
        if self.path.endswith("/nothing"):
            self.wfile.write(b"HTTP/1.1 204 No Content\r\nX-App: yes\r\n\r\n")
            return
        if self.path.endswith("/big"):
            data = bytes(i % 251 for i in range(200 * 1024))
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
            return
        if self.path.endswith("/cookies"):
            # Cookies for the whole origin, another plugin's paths, a domain, and a try at loosening the sandbox.
            self.send_response(200)
            for cookie in ("root=1; Path=/; HttpOnly", "other=2; Path=/ext/other", "own=3; Path=/ext/app/ui/deep; Secure",
                           "dom=4; Domain=127.0.0.1; path=/x; SameSite=Lax", "bare=5", "based=6; Path=/base/sub",
                           "__Host-whole=7; Path=/; Secure"):
                self.send_header("Set-Cookie", cookie)
            self.send_header("Clear-Site-Data", '"*"')
            self.send_header("Service-Worker-Allowed", "/")
            self.send_header("NEL", '{"report_to": "app", "max_age": 86400}')
            self.send_header("Report-To", '{"group": "app", "max_age": 86400, "endpoints": [{"url": "https://collector.example/r"}]}')
            self.send_header("Reporting-Endpoints", 'app="https://collector.example/r"')
            self.send_header("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
            self.send_header("Alt-Svc", 'h2=":8712"')
            self.send_header("Accept-CH", "Sec-CH-UA-Model")
            self.send_header("Content-Security-Policy", "sandbox allow-scripts allow-same-origin")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path.endswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = json.dumps({"method": self.command, "path": self.path, "body": body, "peer": self.client_address[1],
                           "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Set-Cookie", "keel_page=planted; Path=/")
        self.send_header("Set-Cookie", "keel_page =planted; Path=/ext")
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = answer

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
print(f"port {server.server_address[1]}", flush=True)
server.serve_forever()
