#!/usr/bin/env python3
"""A hostile upstream for the proxy tests: it reads each request head off a raw socket and answers with crafted bytes
chosen by the path's last segment, so the proxy meets answers no HTTP library would write:

  switch         101 Switching Protocols to a request that asked for no upgrade, then the connection held open
                 (a later request on it is answered "200 reused-after-switch"; its end is counted)
  switch-smuggle the same 101, followed at once by a whole second answer ("200 ... smuggled")
  informational  100 Continue, then 103 Early Hints (a Link header), then "200 final", in one write
  informational-slow  the same three, each in a write of its own, 0.2 s apart
  both-lengths   200 with both Content-Length and Transfer-Encoding: chunked
  negative-length  200 with Content-Length: -1
  huge-length    200 with a Content-Length of 23 digits (past any integer)
  two-lengths    200 with two different Content-Length fields
  ws-bad-accept  101 to a WebSocket handshake with a wrong Sec-WebSocket-Accept, then held open
  ws-no-accept   101 to a WebSocket handshake without Sec-WebSocket-Accept, then held open
  ws-no-upgrade  101 with the right accept but no Upgrade header, then held open
  ws-200         200 (empty, kept alive) to a WebSocket handshake, then held open
  ws-silent      no answer at all to a WebSocket handshake, the connection held open
  report         JSON: per kind of held connection ("switch": the unasked 101s, "framing": the broken lengths,
                 "ws": the refused handshakes), how many were opened, how many the proxy ended ("<kind>-closed")
                 and how many requests arrived on them afterwards ("<kind>-reused")
  anything else  200 with JSON {"path": ..., "peer": the client's port}

Listens on 127.0.0.1 on a free port, prints "port N" once ready, serves until killed."""
import base64
import hashlib
import json
import socket
import threading
import time

lock = threading.Lock()
counts = {f"{kind}{suffix}": 0 for kind in ("switch", "framing", "ws") for suffix in ("", "-closed", "-reused")}

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def count(name):
    with lock:
        counts[name] += 1


def read_head(conn, buffered):
    """The next request head (bytes up to the blank line) and what came after it; (None, b"") at the end."""
    while b"\r\n\r\n" not in buffered:
        data = conn.recv(65536)
        if not data:
            return None, b""
        buffered += data
    head, rest = buffered.split(b"\r\n\r\n", 1)
    return head, rest


def answer(body, status=b"200 OK", extra=b""):
    return b"HTTP/1.1 " + status + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body


def hold(conn, buffered, kind):
    """Keeps a connection the proxy should have dropped, counted under `kind`: a request on it is counted and
    answered; its end too."""
    count(kind)
    while True:
        head, buffered = read_head(conn, buffered)
        if head is None:
            count(kind + "-closed")
            return
        count(kind + "-reused")
        conn.sendall(answer(b"reused-after-" + kind.encode()))


def accept_key(headers):
    key = headers.get("sec-websocket-key", "").encode()
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def serve(conn, peer):
    buffered = b""
    try:
        while True:
            head, buffered = read_head(conn, buffered)
            if head is None:
                return
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1] if len(lines[0].split(" ")) > 1 else "/"
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            last = path.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
            if last in ("switch", "switch-smuggle"):
                reply = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                if last == "switch-smuggle":
                    reply += answer(b"smuggled", extra=b"X-Smuggled: yes\r\n")
                conn.sendall(reply)
                return hold(conn, buffered, "switch")
            if last == "informational":
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n"
                             b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
                             + answer(b"final", extra=b"X-Final: yes\r\n"))
            elif last == "informational-slow":
                for part in (b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
                             answer(b"final", extra=b"X-Final: yes\r\n")):
                    conn.sendall(part)
                    time.sleep(0.2)
            elif last == "both-lengths":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"5\r\nhello\r\n0\r\n\r\n")
                return hold(conn, buffered, "framing")
            elif last == "negative-length":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nhello")
                return hold(conn, buffered, "framing")
            elif last == "huge-length":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\nhello")
                return hold(conn, buffered, "framing")
            elif last == "two-lengths":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!")
                return hold(conn, buffered, "framing")
            elif last.startswith("ws-"):
                ws = {"ws-bad-accept": b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: d3Jvbmc=\r\n",
                      "ws-no-accept": b"Upgrade: websocket\r\nConnection: Upgrade\r\n",
                      "ws-no-upgrade": b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept_key(headers) + b"\r\n"}
                if last == "ws-200":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                elif last == "ws-silent":
                    pass
                else:
                    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\n" + ws.get(last, b"") + b"\r\n")
                return hold(conn, buffered, "ws")
            elif last == "report":
                with lock:
                    conn.sendall(answer(json.dumps(counts).encode(), extra=b"Content-Type: application/json\r\n"))
            else:
                conn.sendall(answer(json.dumps({"path": path, "peer": peer}).encode(), extra=b"Content-Type: application/json\r\n"))
    except OSError:
        pass
    finally:
        conn.close()


server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", 0))
server.listen(64)
print(f"port {server.getsockname()[1]}", flush=True)
while True:
    client, address = server.accept()
    threading.Thread(target=serve, args=(client, address[1]), daemon=True).start()
