#!/usr/bin/env python3
"""A small WebSocket upstream for the proxy tests (RFC 6455, Python stdlib only).

A handshake on a path ending in /refuse is answered 403. Otherwise, once upgraded, the server first sends one text
message: JSON with the request path and headers it saw; then it echoes every data frame as it came (opcode, fin,
payload: fragments stay fragments); it answers a ping with a pong; the text message "close-me" makes it close with
code 4000; a close from the client is answered with the same code and recorded: the next handshake's JSON carries
the last close code under "last_close". Plain HTTP requests get 200 "plain". Listens on 127.0.0.1 on a free port,
prints "port N" once ready, serves until killed."""
import base64
import hashlib
import json
import socketserver
import struct

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
last_close = [None]


def read_exact(rfile, n):
    data = rfile.read(n)
    if data is None or len(data) < n:
        raise EOFError
    return data


def read_frame(rfile):
    b0, b1 = read_exact(rfile, 2)
    length = b1 & 0x7F
    if length == 126:
        length = struct.unpack("!H", read_exact(rfile, 2))[0]
    elif length == 127:
        length = struct.unpack("!Q", read_exact(rfile, 8))[0]
    mask = read_exact(rfile, 4) if b1 & 0x80 else None
    payload = read_exact(rfile, length)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bool(b0 & 0x80), b0 & 0x0F, payload


def frame(fin, opcode, payload):
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + struct.pack("!H", n)
    else:
        head += bytes([127]) + struct.pack("!Q", n)
    return head + payload


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        request_line = self.rfile.readline().decode("latin-1").strip()
        path = request_line.split(" ")[1] if " " in request_line else ""
        headers = {}
        while True:
            line = self.rfile.readline().decode("latin-1")
            if line in ("\r\n", "\n", ""):
                break
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("upgrade", "").lower() != "websocket":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nplain")
            return
        if path.endswith("/refuse"):
            self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        accept = base64.b64encode(hashlib.sha1(headers.get("sec-websocket-key", "").encode() + GUID).digest())
        # A cookie and a header of the app's own on its 101: neither may reach the client through the proxy.
        self.wfile.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Set-Cookie: app-session=secret; Path=/\r\nX-App-Secret: s3cret\r\n"
                         b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        hello = json.dumps({"path": path, "headers": headers, "last_close": last_close[0]}).encode()
        self.wfile.write(frame(True, 1, hello))
        self.wfile.flush()
        try:
            while True:
                fin, opcode, payload = read_frame(self.rfile)
                if opcode == 8:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    last_close[0] = code
                    self.wfile.write(frame(True, 8, payload[:2]))
                    return
                if opcode == 9:
                    self.wfile.write(frame(True, 10, payload))
                elif opcode == 1 and payload == b"close-me":
                    self.wfile.write(frame(True, 8, struct.pack("!H", 4000) + b"bye"))
                    read_frame(self.rfile)
                    return
                elif opcode in (0, 1, 2):
                    self.wfile.write(frame(fin, opcode, payload))
                self.wfile.flush()
        except (EOFError, ConnectionError):
            return


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


server = Server(("127.0.0.1", 0), Handler)
print(f"port {server.server_address[1]}", flush=True)
server.serve_forever()
