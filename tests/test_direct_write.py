"""Direct writes (issue 13) under stress: every byte, in order, correctly chunk-framed.

On gunicorn's gevent worker a chunk may be written straight from the producer or the
fan-out (when the writer is idle and the socket takes the whole frame), or by the writer
greenlet (queued chunks, the rest of a partial direct write). These tests interleave both
with random sizes (1 B to 256 KiB) and pauses, small receive buffers and slow readers,
and read the raw bytes: the chunked framing must be exact (every chunk holds whole SSE
messages), every payload must arrive once and in order, heartbeats must appear in the
pauses, and a disconnect or a SIGTERM must still end the stream properly.
"""

from __future__ import annotations

import random
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.apps.direct_app import payloads
from tests.servers import OUR_WORKER, Server, gunicorn_server

pytestmark = pytest.mark.slow

APP = "tests.apps.direct_app:create_app()"


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with gunicorn_server(APP, workers=1) as srv:
        yield srv


class ChunkedSSE:
    """A raw HTTP/1.1 client that checks the chunked framing byte by byte."""

    def __init__(self, port: int, path: str, *, slow_seed: int | None = None) -> None:
        self.sock = socket.socket()
        if slow_seed is not None:  # a small window and pauses: the server's sends back up
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.rnd = random.Random(slow_seed) if slow_seed is not None else None
        self.sock.settimeout(30)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        self.buf = b""
        head = self._until(b"\r\n\r\n").decode("latin-1").lower()
        assert head.startswith("http/1.1 200"), head
        assert "transfer-encoding: chunked" in head, head
        self.ended = False

    def _fill(self) -> None:
        if self.rnd is not None and self.rnd.random() < 0.3:
            time.sleep(self.rnd.uniform(0, 0.004))
        data = self.sock.recv(self.rnd.choice((512, 4096, 65536)) if self.rnd else 65536)
        if not data:
            raise EOFError("connection closed inside the chunked body")
        self.buf += data

    def _until(self, sep: bytes) -> bytes:
        while sep not in self.buf:
            self._fill()
        out, self.buf = self.buf.split(sep, 1)
        return out

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def chunk(self) -> bytes | None:
        """The next chunk's payload, None after the terminating chunk."""
        size_line = self._until(b"\r\n")
        assert size_line and all(c in b"0123456789ABCDEFabcdef" for c in size_line), size_line
        size = int(size_line, 16)
        data = self._exactly(size)
        assert self._exactly(2) == b"\r\n", "chunk not followed by CRLF"
        if size == 0:
            self.ended = True
            return None
        return data

    def messages(self) -> Iterator[tuple[str, str]]:
        """(kind, value) per SSE message: ("comment", text), ("retry", ms), ("data", payload)
        (``id:`` lines are skipped). Asserts every chunk holds whole messages only."""
        while True:
            data = self.chunk()
            if data is None:
                return
            yield from split_messages(data)

    def close(self) -> None:
        self.sock.close()


def split_messages(data: bytes) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    assert data.endswith(b"\n"), f"chunk ends inside a line: {data[-40:]!r}"
    lines = data.decode("utf-8").split("\n")[:-1]
    event: list[str] | None = None
    for line in lines:
        if event is not None:
            if line == "":
                out.append(("data", "\n".join(event)))
                event = None
            elif line.startswith("data: "):
                event.append(line[6:])
            else:
                raise AssertionError(f"unexpected line inside an event: {line[:60]!r}")
        elif line.startswith(":"):
            out.append(("comment", line[1:].strip()))
        elif line.startswith("retry: "):
            out.append(("retry", line[7:]))
        elif line.startswith("id: "):
            event = []
        elif line.startswith("data: "):
            event = [line[6:]]
        else:
            raise AssertionError(f"unexpected line: {line[:60]!r}")
    assert event is None, "chunk ends inside an event"
    return out


def read_payloads(client: ChunkedSSE, want: int) -> tuple[list[str], int]:
    """Data payloads until ``want`` arrived (or the stream ended), and heartbeats seen."""
    got: list[str] = []
    beats = 0
    for kind, value in client.messages():
        if kind == "data":
            got.append(value)
            if len(got) == want:
                break
        elif kind == "comment" and value == "ping":
            beats += 1
    return got, beats


def stats(server: Server) -> dict[str, Any]:
    result: dict[str, Any] = httpx.get(server.url + "/stats", timeout=10).json()
    return result


def test_generator_streams_interleave_direct_and_queued_writes(server: Server) -> None:
    before = stats(server)
    n = 150
    results: dict[int, tuple[list[str], int, bool]] = {}
    errors: list[BaseException] = []

    def fallbacks() -> int:
        now = stats(server)
        return int(now["partial"] + now["refused"] - before["partial"] - before["refused"])

    def one(seed: int, slow: bool) -> None:
        try:
            client = ChunkedSSE(
                server.port, f"/mixed?seed={seed}&n={n}", slow_seed=seed if slow else None
            )
            try:
                if seed == 2:
                    # stop reading until the server's socket buffer is full: a direct write
                    # then takes part of a frame or nothing, and the writer takes over
                    deadline = time.monotonic() + 60
                    while fallbacks() == 0 and time.monotonic() < deadline:
                        time.sleep(0.05)  # polling another process's counter
                got, beats = read_payloads(client, n)
                tail = list(client.messages())  # the generator ended: terminating chunk
                results[seed] = (got, beats, client.ended and not tail)
            finally:
                client.close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(seed, seed % 2 == 0)) for seed in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for seed in range(1, 5):
        got, _, ended = results[seed]
        assert len(got) == n
        assert got == payloads(seed, n), f"seed {seed}: payloads differ or out of order"
        assert ended, f"seed {seed}: no terminating chunk after the last event"
    assert sum(r[1] for r in results.values()) > 0, "no heartbeat in any pause"
    assert stats(server)["direct"] > before["direct"], "the direct path was never taken"
    assert fallbacks() > 0, "the writer never had to take over (no partial or refused send)"


def test_broadcast_interleaves_direct_and_queued_writes(server: Server) -> None:
    before = stats(server)
    n = 200
    clients = [
        ChunkedSSE(server.port, "/stream?channel=stress", slow_seed=s) for s in (None, 11, None)
    ]
    try:
        for client in clients:  # the opening line: the subscription is in place
            assert split_messages(client.chunk() or b"") == [("comment", "ok")]
        url = server.url + "/burst?seed=9&n=200"
        burst = threading.Thread(target=httpx.post, args=(url,), kwargs={"timeout": 120})
        burst.start()
        for client in clients:
            got, _ = read_payloads(client, n)
            assert got == payloads(9, n)
        burst.join(120)
    finally:
        for client in clients:
            client.close()
    assert stats(server)["direct"] > before["direct"]


def test_a_burst_from_a_generator_is_joined_by_the_writer_not_sent_event_by_event(
    server: Server,
) -> None:
    """Only the first chunk of a burst (one pass of the event loop) goes direct; the
    writer joins the rest into a few writes instead of one ``send()`` per event."""
    n = 300
    client = ChunkedSSE(server.port, f"/flood?n={n}")
    try:
        chunks = 0
        got: list[str] = []
        while (data := client.chunk()) is not None:
            chunks += 1
            got += [value for kind, value in split_messages(data) if kind == "data"]
    finally:
        client.close()
    assert got == [f"flood:{i}" for i in range(n)]
    # the opening line, the direct first event, then writes of up to 32 queued events
    assert chunks <= n // 8, f"{chunks} chunks for {n} events: the burst was not joined"


def test_a_middleware_between_gunicorn_and_the_stream_turns_direct_writes_off() -> None:
    """A WSGI middleware that holds a chunk back: a direct write would overtake it, so
    the stream writes only through the WSGI path, and everything arrives in order."""
    with gunicorn_server("tests.apps.direct_app:create_wrapped_app()", workers=1) as srv:
        n = 60
        client = ChunkedSSE(srv.port, f"/mixed?seed=5&n={n}")
        try:
            got, _ = read_payloads(client, n)
        finally:
            client.close()
        assert got == payloads(5, n)
        counts = stats(srv)
        assert counts["direct"] == counts["partial"] == counts["refused"] == 0, counts


def _uwsgi_request(path: str, query: str) -> bytes:
    """One request in the uwsgi protocol, as nginx's ``uwsgi_pass`` sends it."""
    env = {
        "REQUEST_METHOD": "GET", "REQUEST_URI": f"{path}?{query}", "PATH_INFO": path,
        "QUERY_STRING": query, "SERVER_PROTOCOL": "HTTP/1.1", "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80", "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1",
        "HTTP_ACCEPT": "text/event-stream",
    }
    body = b"".join(
        struct.pack("<H", len(k)) + k.encode() + struct.pack("<H", len(v)) + v.encode()
        for k, v in env.items()
    )
    return struct.pack("<BHB", 0, len(body), 0) + body


def _raw_exchange(port: int, request: bytes) -> tuple[bytes, bytes]:
    """Send one request on a new connection; the response's head and body (read to EOF)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(30)
    try:
        sock.sendall(request)
        raw = b""
        while data := sock.recv(65536):
            raw += data
    finally:
        sock.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return head, body


def test_gunicorn_uwsgi_protocol_bodies_get_no_chunk_framing() -> None:
    """Under ``--protocol uwsgi`` gunicorn sends the body unframed (nginx frames it): a
    direct write must not add chunk markers there (they used to leak into the events)."""
    with gunicorn_server(APP, workers=1, args=("--protocol", "uwsgi")) as srv:
        head, body = _raw_exchange(srv.port, _uwsgi_request("/mixed", "seed=3&n=40"))
    assert b"transfer-encoding" not in head.lower()
    text = body.decode("utf-8")
    assert "\r" not in text, "chunk markers in an unframed body"
    got = [kind_value[1] for kind_value in split_messages(body) if kind_value[0] == "data"]
    assert got == payloads(3, 40)


def test_bodies_gunicorn_does_not_chunk_are_never_written_directly(server: Server) -> None:
    """HTTP/1.0 (unframed body) and HEAD (no body): gunicorn's own framing decision keeps
    direct writes off, so no chunk marker and no byte of a body leaks out."""
    before = stats(server)["direct"]
    head, body = _raw_exchange(
        server.port, b"GET /mixed?seed=6&n=30 HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n"
    )
    assert b"chunked" not in head.lower()
    assert [v for k, v in split_messages(body) if k == "data"] == payloads(6, 30)
    head, body = _raw_exchange(
        server.port, b"HEAD /mixed?seed=6&n=30 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert head.startswith(b"HTTP/1.1 200")
    assert body == b""
    assert stats(server)["direct"] == before


def test_gunicorns_access_log_counts_the_bytes_written_directly(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    args = ("--access-logfile", str(log), "--access-logformat", "%(U)s %(B)s")
    with gunicorn_server(APP, workers=1, config=None, args=args, worker_class=OUR_WORKER) as srv:
        client = ChunkedSSE(srv.port, "/mixed?seed=4&n=40")
        received = 0
        try:
            while (data := client.chunk()) is not None:
                received += len(data)
        finally:
            client.close()
        before = stats(srv)
        deadline = time.monotonic() + 10
        while "/mixed" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)  # gunicorn writes the line after the response: another process
    assert before["direct"] > 0, "no direct write: the test would prove nothing"
    (line,) = [entry for entry in log.read_text().splitlines() if entry.startswith("/mixed")]
    assert int(line.split()[1]) == received


def test_disconnect_mid_stream_still_stops_the_generator(server: Server) -> None:
    before = stats(server)["finally"]
    client = ChunkedSSE(server.port, "/mixed?seed=21&n=100000")
    got, _ = read_payloads(client, 20)
    assert got == payloads(21, 20)
    client.close()
    deadline = time.monotonic() + 10
    while stats(server)["finally"] <= before and time.monotonic() < deadline:
        time.sleep(0.05)  # polling another process's counter
    assert stats(server)["finally"] > before, "the generator's finally: did not run"


def test_sigterm_ends_every_stream_with_a_retry_line_and_valid_framing() -> None:
    with gunicorn_server(APP, workers=1) as srv:
        clients = [
            ChunkedSSE(srv.port, "/mixed?seed=31&n=100000"),
            ChunkedSSE(srv.port, "/mixed?seed=32&n=100000", slow_seed=32),
            ChunkedSSE(srv.port, "/hang"),
            ChunkedSSE(srv.port, "/stream?channel=stress"),
        ]
        for client in clients:
            assert next(client.messages())[0] in ("comment", "retry")
        srv.proc.send_signal(signal.SIGTERM)
        for client in clients:
            last = None
            try:
                for kind, value in client.messages():
                    last = (kind, value)
            finally:
                client.close()
            assert client.ended, "the stream did not end with a terminating chunk"
            assert last is not None and last[0] == "retry", last
