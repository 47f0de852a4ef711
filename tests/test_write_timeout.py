"""``SSE_WRITE_TIMEOUT`` cuts a client that stopped reading, never one that reads on.

A burst of events is joined into one large write; a client that reads it steadily, if more
slowly than the server could send, makes progress all the time and must get every event,
however long the whole write takes. (A client that stops reading altogether is cut:
``test_core_servers.py::test_a_zero_window_peer_is_cut_by_the_write_timeout``.)
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.servers import Server, gunicorn_server
from tests.sse_parser import parse

pytestmark = pytest.mark.slow

WRITE_TIMEOUT = 1.5  # seconds without progress that cut a client
EVENTS = 200
EVENT_BYTES = 60_000  # 12 MB in all, far more than the kernel buffers hold (4 MB)
READ_BYTES = 16_384  # the reader takes this much...
READ_PAUSE = 0.01  # ...then pauses this long: ~1.6 MB/s, never silent for long


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    env = {"TEST_QUEUE": "100000", "TEST_WRITE_TIMEOUT": str(WRITE_TIMEOUT),
           "TEST_HEARTBEAT": "60"}
    with gunicorn_server("tests.apps.core_app:create_app()", env=env) as server:
        yield server


def subscribe(server: Server, channel: str) -> socket.socket:
    """A channel stream on a socket with a small receive buffer (set before connecting,
    so the TCP window stays small): the server's writes wait on this reader's pace."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32_768)
    sock.settimeout(15)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(f"GET /stream?channel={channel} HTTP/1.1\r\nHost: x\r\n"
                 "Accept: text/event-stream\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)  # byte by byte: nothing of the body is consumed here
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


def test_a_slow_but_steady_reader_gets_a_whole_burst(server: Server) -> None:
    """A burst of 200 events of 60 KB events, read at a steady ~1.6 MB/s (never pausing more than
    a few hundredths of a second): the write of the burst takes longer than the write
    timeout, but the client makes progress throughout, so it is not cut. It gets all 200
    events, and the stream stays open for the next one."""
    sock = subscribe(server, "burst")
    try:
        published = httpx.post(server.url + "/publish", timeout=30, json={
            "channel": "burst", "count": EVENTS, "size": EVENT_BYTES})
        assert published.status_code == 200
        body = bytearray()
        ends = 0  # blank lines seen: one per event
        while ends < EVENTS:
            try:
                chunk = sock.recv(READ_BYTES)
            except (ConnectionError, TimeoutError):
                break  # cut: the assert below says how far it got
            if not chunk:
                break
            ends += (bytes(body[-1:]) + chunk).count(b"\n\n")
            body += chunk
            time.sleep(READ_PAUSE)  # the client's pace, not a wait for anything
        got = sum(e.type == "message" for e in parse(bytes(body)).events)
        assert got == EVENTS, f"cut after {got} of {EVENTS} events"
        # still subscribed: the next event arrives on the same connection
        after = httpx.post(server.url + "/publish", timeout=30,
                           json={"channel": "burst", "data": "after the burst"})
        assert after.status_code == 200
        rest = b""
        while b"after the burst" not in rest:
            chunk = sock.recv(READ_BYTES)
            assert chunk, "the stream ended after the burst"
            rest += chunk
    finally:
        sock.close()
