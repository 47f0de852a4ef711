"""The floor of a Python relay: gevent, raw sockets on both sides, no framework.

    BENCH_UPSTREAM_URL=http://127.0.0.1:8090/v1 python bench/servers/relay_bare.py --port 8000

``GET /chat/stream?message=TEXT`` opens (or reuses, keep-alive) a raw gevent socket to the
upstream, POSTs ``/chat/completions`` with ``stream: true``, decodes the chunked body,
splits it into SSE messages, ``json.loads`` each ``data:`` line and writes every piece of
content to the client at once as ``id: <stream_id>:<seq>`` + ``data: {"content": ...}``
(chunked, like gunicorn), then ``event: close`` with the finish reason. What a correct
relay cannot skip (read, frame, one JSON decode and encode per chunk) and nothing more:
no request routing, no WSGI, no generation log, no resume. A client that leaves is noticed
when a write fails; the upstream socket is then closed. ``GET /stats`` for readiness.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
from urllib.parse import parse_qs, urlsplit  # noqa: E402

from gevent.server import StreamServer  # noqa: E402

UPSTREAM = urlsplit(os.environ.get("BENCH_UPSTREAM_URL", "http://127.0.0.1:8090/v1"))
UP_ADDR = (UPSTREAM.hostname or "127.0.0.1", UPSTREAM.port or 80)
UP_PATH = UPSTREAM.path.rstrip("/") + "/chat/completions"
HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
    b"Cache-Control: no-cache, no-store, no-transform\r\nX-Accel-Buffering: no\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
OPEN = b"6\r\n: ok\n\n\r\n"
idle: list[socket.socket] = []  # keep-alive upstream connections
state = {"open_streams": 0}
ids = itertools.count()
dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def chunk(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(body), body)


def upstream_request(message: str) -> bytes:
    body = json.dumps({"model": "bench", "stream": True, "stream_options": {"include_usage": True},
                       "messages": [{"role": "user", "content": message}]}).encode()
    return (
        f"POST {UP_PATH} HTTP/1.1\r\nHost: {UP_ADDR[0]}:{UP_ADDR[1]}\r\n"
        f"Content-Type: application/json\r\nAuthorization: Bearer bench\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def relay(client: socket.socket, message: str) -> None:
    """Stream one reply from the upstream to ``client``."""
    up = idle.pop() if idle else socket.create_connection(UP_ADDR)
    up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    stream_id = f"r{next(ids)}"
    seq = 0
    finish = "stop"
    clean = False
    try:
        up.sendall(upstream_request(message))
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = up.recv(65536)
            if not data:
                raise OSError("upstream closed")
            buf += data
        head, _, buf = buf.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise OSError("upstream status")
        client.sendall(HEAD + OPEN)
        body = b""
        ended = False
        while True:
            while True:  # dechunk
                eol = buf.find(b"\r\n")
                if eol < 0:
                    break
                size = int(buf[:eol], 16)
                if size == 0:
                    ended = True
                    buf = buf[eol + 4:]
                    break
                if len(buf) < eol + 4 + size:
                    break
                body += buf[eol + 2 : eol + 2 + size]
                buf = buf[eol + 4 + size :]
            out = []
            while True:  # SSE messages
                end = body.find(b"\n\n")
                if end < 0:
                    break
                line, body = body[:end], body[end + 2 :]
                if not line.startswith(b"data: ") or line == b"data: [DONE]":
                    continue
                obj = json.loads(line[6:])
                choices = obj.get("choices")
                if not choices:
                    continue
                content = choices[0].get("delta", {}).get("content")
                if content:
                    seq += 1
                    out.append(chunk(b"id: %s:%d\ndata: %s\n\n" % (
                        stream_id.encode(), seq, dumps({"content": content}).encode())))
                finish = choices[0].get("finish_reason") or finish
            if out:
                client.sendall(out[0] if len(out) == 1 else b"".join(out))
            if ended:
                clean = True
                break
            data = up.recv(65536)
            if not data:
                break
            buf += data
        close = b"id: %s:%d\nevent: close\ndata: %s\n\n" % (
            stream_id.encode(), seq + 1, dumps({"finish_reason": finish}).encode())
        client.sendall(chunk(close) + b"0\r\n\r\n")
    finally:
        if clean and not buf:
            idle.append(up)
        else:
            up.close()


def handle(client: socket.socket, _addr: object) -> None:
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = client.recv(65536)
            if not data:
                return
            buf += data
        target = buf.split(b" ", 2)[1].decode()
        path, _, query = target.partition("?")
        if path == "/chat/stream":
            state["open_streams"] += 1
            try:
                relay(client, parse_qs(query).get("message", ["hi"])[0])
            finally:
                state["open_streams"] -= 1
            return
        status = "200 OK" if path == "/stats" else "404 Not Found"
        payload = json.dumps(state).encode()
        client.sendall(f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                       f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                       + payload)
    except OSError:
        pass
    finally:
        client.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(4096)
    StreamServer(listener, handle, spawn=100_000).serve_forever()


if __name__ == "__main__":
    main()
