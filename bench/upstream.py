"""A lean OpenAI-compatible upstream for the relay bench: gevent, raw sockets, loopback.

    python bench/upstream.py --port 8090 --procs 2 --chunks 100 --interval 0.05

``POST .../chat/completions`` streams a reply the way OpenAI's servers do: a role chunk,
``chunks`` content chunks ``interval`` seconds apart (each ``data: {chat.completion.chunk
JSON}`` in its own HTTP chunk), a ``finish_reason: "stop"`` chunk, a usage chunk
(``choices: []``) and ``data: [DONE]``, chunked transfer encoding, keep-alive. Nothing
else of the API is served (``GET /stats`` answers ``{"ok": true}`` for readiness).

Each content chunk's text is ``"<scheduled>/<sent> "``: the time (``time.time()``) the
chunk was due and the time it was written to the socket, so a client can measure the
relay's added latency (receive time - sent) and check that the upstream kept its own
schedule (sent - scheduled). A path prefix overrides the sizes per request, so every
client (the ``openai`` SDK, ``OpenAIBackend``, httpx) takes it through ``base_url``:
``http://127.0.0.1:PORT/c100/i0.05/v1`` -> 100 chunks 50 ms apart.

It has to stay far from being the bottleneck: the replies' constant parts are
pre-encoded, one ``sendall`` per chunk, no JSON encoding per chunk, and ``--procs``
processes share the port (``SO_REUSEPORT``, the kernel spreads the connections). The
bench measures its CPU separately from the server under test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import time

FINISH = (
    b'{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":%d,"model":"%s",'
    b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}'
)
USAGE = (
    b'{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":%d,"model":"%s",'
    b'"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":%d,"total_tokens":%d}}'
)
HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
    b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def frame(payload: bytes) -> bytes:
    """One SSE ``data:`` message as one HTTP/1.1 chunk."""
    body = b"data: " + payload + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(body), body)


def sizes(path: bytes, chunks: int, interval: float) -> tuple[int, float]:
    """The ``/c<chunks>/i<interval>`` prefix of a request path, else the defaults."""
    for part in path.split(b"/"):
        try:
            if part[:1] == b"c" and part[1:].isdigit():
                chunks = min(int(part[1:]), 1_000_000)
            elif part[:1] == b"i" and part[1:]:
                interval = max(0.0, min(float(part[1:]), 60.0))
        except ValueError:
            continue
    return chunks, interval


class Conn:
    """One client connection: HTTP/1.1 requests in a keep-alive loop."""

    def __init__(self, sock: socket.socket, chunks: int, interval: float) -> None:
        self.sock = sock
        self.buf = b""
        self.chunks = chunks
        self.interval = interval

    def read_request(self) -> tuple[bytes, bytes, bytes] | None:
        sock = self.sock
        while b"\r\n\r\n" not in self.buf:
            data = sock.recv(65536)
            if not data:
                return None
            self.buf += data
            if len(self.buf) > 1 << 20:
                return None
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        method, path, _ = lines[0].split(b" ", 2)
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            data = sock.recv(65536)
            if not data:
                return None
            rest += data
        self.buf = rest[length:]
        return method, path, rest[:length]

    def serve(self) -> None:
        while True:
            request = self.read_request()
            if request is None:
                return
            method, path, body = request
            if method == b"POST" and path.split(b"?")[0].endswith(b"/chat/completions"):
                if not self.stream(path, body):
                    return
            else:
                ok = path.startswith(b"/stats")
                payload = b'{"ok": true}' if ok else b'{"error": {"message": "not found"}}'
                status = b"200 OK" if ok else b"404 Not Found"
                self.sock.sendall(
                    b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (status, len(payload), payload)
                )

    def stream(self, path: bytes, body: bytes) -> bool:
        """Stream one reply; False when the client went away."""
        import gevent

        chunks, interval = sizes(path, self.chunks, self.interval)
        try:
            model = str(json.loads(body).get("model") or "bench").encode()[:64]
        except (ValueError, AttributeError):
            model = b"bench"
        created = int(time.time())
        prefix = (
            b'{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":%d,"model":"%s",'
            b'"choices":[{"index":0,"delta":{"content":"' % (created, model)
        )
        suffix = b' "},"finish_reason":null}]}'
        role = (prefix[: -len(b'"content":"')]
                + b'"role":"assistant","content":""},"finish_reason":null}]}')
        sock = self.sock
        try:
            sock.sendall(HEAD + frame(role))
            start = time.time()
            for i in range(1, chunks + 1):
                due = start + i * interval
                delay = due - time.time()
                if delay > 0:
                    gevent.sleep(delay)
                now = time.time()
                sock.sendall(frame(b"%s%.6f/%.6f%s" % (prefix, due, now, suffix)))
            tail = (
                frame(FINISH % (created, model))
                + frame(USAGE % (created, model, chunks, chunks + 5))
                + frame(b"[DONE]")
                + b"0\r\n\r\n"
            )
            sock.sendall(tail)
        except OSError:
            return False
        return True


def child(port: int, chunks: int, interval: float) -> None:
    from gevent import monkey

    monkey.patch_all()
    from gevent.server import StreamServer

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(4096)

    def handle(sock: socket.socket, _addr: object) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            Conn(sock, chunks, interval).serve()
        except OSError:
            pass
        finally:
            sock.close()

    server = StreamServer(listener, handle, spawn=100_000)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # nothing to clean up
    server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--procs", type=int, default=1)
    ap.add_argument("--chunks", type=int, default=100)
    ap.add_argument("--interval", type=float, default=0.05)
    args = ap.parse_args(argv)
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.procs <= 1:
        child(args.port, args.chunks, args.interval)
        return
    pids = []
    for _ in range(args.procs):
        pid = os.fork()
        if pid == 0:
            try:
                child(args.port, args.chunks, args.interval)
            finally:
                os._exit(0)
        pids.append(pid)

    def stop(*_: object) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    sys.exit(0)


if __name__ == "__main__":
    main()
