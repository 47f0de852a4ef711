"""Raw-socket asyncio SSE load generator.

One process holds tens of thousands of Server-Sent Events streams: every stream is an
``asyncio.Protocol`` (no coroutine, no StreamReader) with a handful of slots, parsing the
HTTP response incrementally:

* status line and headers, then a chunked (gunicorn, uvicorn) or close-delimited body;
* the SSE wire format per the WHATWG parsing rules (LF, CR and CRLF line ends, comments,
  ``field: value`` with one optional space, multi-line ``data``), dispatching an event
  on each blank line that follows data.

Event data carrying a send timestamp (JSON ``{"t": <time.time()>, "n": <seq>}`` or a
bare float) gives publish-to-receive latency; ``n == -1`` marks a warm-up event that
counts as "primed" but not as a delivery.

Connections are spread round-robin over source addresses ``127.0.0.2 ..`` (bind before
connect with ``IP_BIND_ADDRESS_NO_PORT``) so that more than ~28k streams (the ephemeral
port range per source address) can be opened to one server port.

Only loopback addresses are used. Import this module from the scenario driver
(``bench/drive.py``); it has no third-party dependencies (uvloop is used when present).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import resource
import socket
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
STREAMS_PER_SOURCE = 20_000  # stay well below the 28k ephemeral ports per source address


def raise_nofile_limit() -> int:
    """Raise RLIMIT_NOFILE to the hard limit (or beyond, if we may); return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in (1_048_576, 262_144, hard):
        if want <= soft:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def install_uvloop() -> str:
    """Use uvloop when installed; return the name of the event loop in use."""
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def source_addresses(n_streams: int, minimum: int = 1) -> list[str]:
    """Loopback source addresses 127.0.0.2.. enough for ``n_streams`` connections."""
    k = max(minimum, math.ceil(n_streams / STREAMS_PER_SOURCE))
    if k > 250:
        raise ValueError("too many streams for the 127.0.0.0/24 source range")
    return [f"127.0.0.{2 + i}" for i in range(k)]


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of ``values``; None when empty."""
    data = sorted(values)
    if not data:
        return None
    rank = max(0, min(len(data) - 1, math.ceil(q / 100.0 * len(data)) - 1))
    return data[rank]


def parse_stamp(data: bytes) -> tuple[float, int] | None:
    """(send time, sequence) from event data, or None when the data carries no stamp."""
    try:
        if data[:1] == b"{":
            obj = json.loads(data)
            if isinstance(obj, dict) and "t" in obj:
                return float(obj["t"]), int(obj.get("n", 0))
            return None
        return float(data), 0
    except (ValueError, TypeError):
        return None


# connection states
_HEAD, _BODY, _DONE = 0, 1, 2


class SSEProtocol(asyncio.Protocol):
    """One SSE stream: incremental HTTP/1.1 + SSE parser feeding a :class:`Swarm`."""

    __slots__ = (
        "cbuf",
        "chunk_left",
        "chunked",
        "data",
        "etype",
        "hbuf",
        "last_id",
        "nevents",
        "retry",
        "sbuf",
        "state",
        "swarm",
        "transport",
    )

    def __init__(self, swarm: Swarm) -> None:
        self.swarm = swarm
        self.transport: asyncio.Transport | None = None
        self.state = _HEAD
        self.hbuf = b""
        self.cbuf = b""
        self.sbuf = b""
        self.chunked = False
        self.chunk_left = 0
        self.data: bytes | None = None
        self.etype: bytes | None = None
        self.nevents = 0
        self.last_id: bytes | None = None  # the stream's last event id (kept across events)
        self.retry: int | None = None  # the last retry: field, in ms

    # -- asyncio callbacks -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.swarm.alive.add(self)
        self.transport.write(self.swarm.request)

    def connection_lost(self, exc: Exception | None) -> None:
        swarm = self.swarm
        swarm.alive.discard(self)
        if self.state == _HEAD:
            swarm.failed += 1
            swarm.errors["closed before headers"] += 1
        elif self.state == _BODY:
            swarm.dropped += 1  # server closed a live stream (without a terminal chunk)
            swarm.ended += 1
        self.state = _DONE
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.state == _HEAD:
            data = self._head(data)
            if not data:
                return
        if self.state != _BODY:
            return
        if self.chunked:
            data = self._dechunk(data)
        if data:
            self._feed(data)
        if self.state == _DONE and self.transport is not None:
            self.transport.close()

    def eof_received(self) -> bool | None:
        return None  # close the transport

    # -- HTTP ----------------------------------------------------------------------------
    def _head(self, data: bytes) -> bytes:
        buf = self.hbuf + data if self.hbuf else data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > 65536:
                self._fail("oversized headers")
            self.hbuf = buf
            return b""
        self.hbuf = b""
        lines = buf[:end].split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        swarm = self.swarm
        if status != 200:
            self._fail(f"HTTP {status}")
            return b""
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
                self.chunked = True
        self.state = _BODY
        swarm.connected += 1
        return buf[end + 4 :]

    def _fail(self, why: str) -> None:
        swarm = self.swarm
        swarm.failed += 1
        swarm.errors[why] += 1
        self.state = _DONE
        if self.transport is not None:
            self.transport.close()

    def _dechunk(self, data: bytes) -> bytes:
        buf = self.cbuf + data if self.cbuf else data
        pos, n = 0, len(buf)
        out: list[bytes] = []
        while pos < n:
            left = self.chunk_left
            if left > 0:
                take = min(left, n - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self.chunk_left = -1 if take == left else left - take
            elif left == -1:  # CRLF after chunk data
                if n - pos < 2:
                    break
                pos += 2
                self.chunk_left = 0
            else:  # chunk-size line
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                try:
                    size = int(buf[pos:eol].split(b";", 1)[0], 16)
                except ValueError:
                    self._fail("bad chunk size")
                    return b""
                pos = eol + 2
                if size == 0:  # last chunk: the server ended the stream
                    self.state = _DONE
                    self.swarm.ended += 1
                    break
                self.chunk_left = size
        self.cbuf = buf[pos:] if pos < n and self.state == _BODY else b""
        return out[0] if len(out) == 1 else b"".join(out)

    # -- SSE -----------------------------------------------------------------------------
    def _feed(self, data: bytes) -> None:
        buf = self.sbuf + data if self.sbuf else data
        if b"\r" in buf:
            held = buf.endswith(b"\r")  # may be the first half of a CRLF split across reads
            if held:
                buf = buf[:-1]
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if held:
                buf += b"\r"
        start = 0
        now = 0.0
        while True:
            eol = buf.find(b"\n", start)
            if eol < 0:
                break
            line = buf[start:eol]
            start = eol + 1
            if not line:
                if self.data is not None:
                    if not now:
                        now = time.time()
                    self.swarm.dispatch(self, self.etype, self.data, now)
                self.data = None
                self.etype = None
            elif line[0] == 58:  # ":" comment / heartbeat
                continue
            else:
                colon = line.find(b":")
                if colon < 0:
                    name, value = line, b""
                else:
                    name, value = line[:colon], line[colon + 1 :]
                    if value[:1] == b" ":
                        value = value[1:]
                if name == b"data":
                    self.data = value if self.data is None else self.data + b"\n" + value
                elif name == b"event":
                    self.etype = value
                elif name == b"id":
                    if b"\0" not in value:
                        self.last_id = value
                elif name == b"retry" and value.isdigit():
                    self.retry = int(value)
        self.sbuf = buf[start:] if start < len(buf) else b""

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@dataclass
class Swarm:
    """Many SSE streams to one server path, and what they received."""

    host: str
    port: int
    path: str
    sources: list[str] = field(default_factory=list)
    connect_timeout: float = 10.0
    connect_concurrency: int = 256
    keep_latencies: bool = True
    on_event: Callable[[SSEProtocol, bytes | None, bytes, float], None] | None = None
    # reads (send time, seq) from event data; the relay's events carry their stamp elsewhere
    parse: Callable[[bytes], tuple[float, int] | None] = parse_stamp

    # counters
    attempted: int = 0
    connected: int = 0  # response headers 200 received
    failed: int = 0  # connect error, non-200, closed before headers
    dropped: int = 0  # server closed a live stream without ending it
    ended: int = 0  # streams that ended (terminal chunk or close after headers)
    events: int = 0  # data events with a non-warm-up payload
    warm_events: int = 0
    primed: int = 0  # streams that received at least one data event
    first_event_time: float = 0.0
    last_event_time: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: array[float] = field(default_factory=lambda: array("d"))
    alive: set[SSEProtocol] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.request = (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Accept: text/event-stream\r\nCache-Control: no-cache\r\n"
            "User-Agent: flask-sse-stream-bench\r\n\r\n"
        ).encode()
        self._next_source = 0

    # -- events --------------------------------------------------------------------------
    def dispatch(self, conn: SSEProtocol, etype: bytes | None, data: bytes, now: float) -> None:
        if conn.nevents == 0:
            self.primed += 1
        conn.nevents += 1
        stamp = self.parse(data)
        if stamp is not None and stamp[1] < 0:
            self.warm_events += 1
        else:
            self.events += 1
            if not self.first_event_time:
                self.first_event_time = now
            self.last_event_time = now
            if stamp is not None and self.keep_latencies:
                self.latencies.append(now - stamp[0])
        if self.on_event is not None:
            self.on_event(conn, etype, data, now)

    def reset_counts(self) -> None:
        """Start a new measurement phase (connection counters are kept)."""
        self.events = 0
        self.warm_events = 0
        self.first_event_time = 0.0
        self.last_event_time = 0.0
        self.latencies = array("d")

    # -- connections ---------------------------------------------------------------------
    def _source(self) -> str | None:
        if not self.sources:
            return None
        src = self.sources[self._next_source % len(self.sources)]
        self._next_source += 1
        return src

    async def connect_one(self) -> SSEProtocol | None:
        loop = asyncio.get_running_loop()
        self.attempted += 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            src = self._source()
            if src is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((src, 0))
            await asyncio.wait_for(
                loop.sock_connect(sock, (self.host, self.port)), self.connect_timeout
            )
            _, proto = await loop.create_connection(lambda: SSEProtocol(self), sock=sock)
            return proto
        except (OSError, asyncio.TimeoutError) as exc:
            sock.close()
            self.failed += 1
            self.errors[
                type(exc).__name__
                + (f" errno={exc.errno}" if isinstance(exc, OSError) and exc.errno else "")
            ] += 1
            return None

    async def open(self, n: int, *, deadline: float | None = None) -> None:
        """Open ``n`` streams, ``connect_concurrency`` TCP handshakes in flight at a time.

        Returns when every TCP connection is established (request written) or failed;
        response headers may come later (some servers send nothing before an event).
        """
        sem = asyncio.Semaphore(self.connect_concurrency)

        async def one() -> None:
            async with sem:
                if deadline is not None and time.monotonic() > deadline:
                    self.failed += 1
                    self.errors["open deadline"] += 1
                    return
                await self.connect_one()

        await asyncio.gather(*(one() for _ in range(n)))

    def close_all(self) -> None:
        for conn in list(self.alive):
            conn.close()

    async def wait_until(
        self, predicate: Callable[[], bool], timeout: float, poll: float = 0.02
    ) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(poll)
        return True

    def summary(self) -> dict[str, Any]:
        lat = self.latencies
        return {
            "attempted": self.attempted,
            "connected": self.connected,
            "failed": self.failed,
            "dropped": self.dropped,
            "alive": len(self.alive),
            "primed": self.primed,
            "events": self.events,
            "latency_ms": latency_summary(lat),
            "errors": dict(self.errors.most_common(5)),
        }


def latency_summary(lat: Iterable[float]) -> dict[str, float | None]:
    data = sorted(lat)
    if not data:
        return {"p50": None, "p90": None, "p99": None, "max": None, "n": 0}

    def pick(q: float) -> float:
        rank = max(0, min(len(data) - 1, math.ceil(q / 100.0 * len(data)) - 1))
        return round(data[rank] * 1000.0, 3)

    return {
        "p50": pick(50),
        "p90": pick(90),
        "p99": pick(99),
        "max": round(data[-1] * 1000.0, 3),
        "n": len(data),
    }


async def http_request(
    host: str,
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    timeout: float = 60.0,
) -> tuple[int, bytes]:
    """One small HTTP/1.1 request (Connection: close); returns (status, body)."""

    async def run() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            head = (
                f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
                f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            writer.write(head + body)
            raw = await reader.read(-1)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        head_end = raw.find(b"\r\n\r\n")
        if head_end < 0:
            return 0, b""
        status = int(raw.split(b" ", 2)[1])
        headers = raw[:head_end].lower()
        payload = raw[head_end + 4 :]
        if b"transfer-encoding: chunked" in headers:
            payload = _dechunk_all(payload)
        return status, payload

    return await asyncio.wait_for(run(), timeout)


def _dechunk_all(payload: bytes) -> bytes:
    out, pos = [], 0
    while True:
        eol = payload.find(b"\r\n", pos)
        if eol < 0:
            break
        size = int(payload[pos:eol].split(b";", 1)[0], 16)
        if size == 0:
            break
        out.append(payload[eol + 2 : eol + 2 + size])
        pos = eol + 2 + size + 2
    return b"".join(out)


async def _demo(
    host: str, port: int, path: str, n: int, seconds: float, sources: int
) -> dict[str, Any]:
    swarm = Swarm(host, port, path, sources=source_addresses(n, minimum=sources))
    t0 = time.monotonic()
    await swarm.open(n)
    await swarm.wait_until(lambda: swarm.connected + swarm.failed >= n, 30)
    opened = time.monotonic() - t0
    await asyncio.sleep(seconds)
    result = swarm.summary()
    result["open_seconds"] = round(opened, 3)
    result["sources"] = swarm.sources
    swarm.close_all()
    await asyncio.sleep(0.2)
    return result


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="hold N SSE streams and report what arrived")
    parser.add_argument("url", help="http://127.0.0.1:PORT/path")
    parser.add_argument("-n", type=int, default=100)
    parser.add_argument("-t", "--seconds", type=float, default=5.0)
    parser.add_argument("--sources", type=int, default=1, help="at least this many addresses")
    args = parser.parse_args()
    from urllib.parse import urlsplit

    url = urlsplit(args.url)
    host = url.hostname or "127.0.0.1"
    if not host.startswith("127."):
        raise SystemExit("loopback addresses only")
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    raise_nofile_limit()
    install_uvloop()
    print(
        json.dumps(
            asyncio.run(_demo(host, url.port or 80, path, args.n, args.seconds, args.sources))
        )
    )


if __name__ == "__main__":
    main()
