"""A real TCP proxy between the device and the cloud that damages downlink responses on the wire (test helper).

Modes (applied once, to the next response of a `/rounds/<r>` request, then the proxy passes bytes through):
- "flip": one byte of the body is flipped (length unchanged) — checksum must catch it;
- "truncate": the body is cut in half and Content-Length rewritten to match — a well-formed HTTP answer
  carrying a truncated payload;
- "cut": headers and half the body are sent, then the connection is closed — an incomplete HTTP read.
"""
from __future__ import annotations

import re
import socket
import socketserver
import threading


def _read_http(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.search(rb"(?i)content-length:\s*(\d+)", head)
    need = int(m.group(1)) if m else 0
    while len(body) < need:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


class WireProxy:
    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.mode: str | None = None
        self.damaged = 0
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                request = _read_http(self.request)
                if not request:
                    return
                with socket.create_connection(("127.0.0.1", proxy.upstream_port)) as up:
                    request = re.sub(rb"(?i)\r\nconnection:[^\r]*", b"", request, count=1)
                    head, _, body = request.partition(b"\r\n\r\n")
                    up.sendall(head + b"\r\nConnection: close\r\n\r\n" + body)
                    response = _read_http(up)
                path = request.split(b" ", 2)[1] if b" " in request else b""
                mode = proxy.mode if re.search(rb"/rounds/\d+$", path) else None
                if mode is None:
                    self.request.sendall(response)
                    return
                proxy.mode, proxy.damaged = None, proxy.damaged + 1
                head, _, body = response.partition(b"\r\n\r\n")
                if mode == "flip":
                    body = body[:-10] + bytes([body[-10] ^ 0x40]) + body[-9:]
                    self.request.sendall(head + b"\r\n\r\n" + body)
                elif mode == "truncate":
                    body = body[: len(body) // 2]
                    head = re.sub(rb"(?i)content-length:\s*\d+", b"content-length: %d" % len(body), head)
                    self.request.sendall(head + b"\r\n\r\n" + body)
                elif mode == "cut":
                    self.request.sendall(head + b"\r\n\r\n" + body[: len(body) // 2])
                    self.request.shutdown(socket.SHUT_RDWR)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
