"""The reconnect storm's machinery: EventSource-like clients, CPU sampling, publishing.

Used by ``bench/storm.py``. A :class:`StormClient` is one logical client (a channel
subscriber, a chat follower, or a bare accept-storm client) whose connections are
:class:`StormConn` (the load generator's SSE parser with its own request and end); it
reconnects like ``EventSource`` (after its last ``retry``, with ``Last-Event-ID``) once the
storm's cut has happened. :class:`CpuSampler` records the arbiter's workers' CPU time
every 20 ms (the old worker's drain and the new worker's storm, apart); :class:`Publisher`
publishes through the library's broker from the driver's own process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from collections import Counter
from typing import Any

import psutil
from loadgen import (
    _BODY,
    _HEAD,
    IP_BIND_ADDRESS_NO_PORT,
    SSEProtocol,
    Swarm,
    parse_stamp,
    source_addresses,
)

JITTER = (0.5, 1.5)  # the drain's retry hint is SSE_SHUTDOWN_RETRY_MS (1 s) x uniform(0.5, 1.5)


class StormConn(SSEProtocol):
    """One connection of a :class:`StormClient` (its own request, its own end)."""

    def __init__(self, client: StormClient, request: bytes) -> None:
        super().__init__(client.storm.swarm)
        self.client = client
        self.req = request
        self.after_cut = client.storm.cut_at is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.swarm.alive.add(self)
        self.transport.write(self.req)  # type: ignore[union-attr]

    def _head(self, data: bytes) -> bytes:
        rest = super()._head(data)
        if self.state == _BODY:
            self.client.on_headers(self)
        return rest

    def _fail(self, why: str) -> None:
        if why == "HTTP 204":
            self.client.on_no_content(self)
        super()._fail(why)

    def connection_lost(self, exc: Exception | None) -> None:
        had_headers = self.state != _HEAD
        super().connection_lost(exc)
        self.client.on_end(self, had_headers)


class StormClient:
    """One EventSource-like client: reconnects after ``retry`` with ``Last-Event-ID``."""

    def __init__(self, storm: Storm, kind: str, path: str) -> None:
        self.storm = storm
        self.kind = kind  # "sub" | "chat" | "accept"
        self.path = path
        self.last_id: str | None = None
        self.retry_ms = 1000
        self.done = False
        self.closed_live = False
        self.resumed_at: float | None = None
        self.headers_at: float | None = None
        self.after: list[int] = []  # sub: n of events after the cut; chat: every seq
        self.reconnects = 0

    def request(self) -> bytes:
        head = f"Last-Event-ID: {self.last_id}\r\n" if self.last_id else ""
        return (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.storm.host}:{self.storm.port}\r\n"
            f"Accept: text/event-stream\r\nCache-Control: no-cache\r\n{head}\r\n"
        ).encode()

    async def connect(self) -> None:
        storm = self.storm
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((storm.source(), 0))
            await asyncio.wait_for(loop.sock_connect(sock, (storm.host, storm.port)), 30)
            await loop.create_connection(lambda: StormConn(self, self.request()), sock=sock)
        except (OSError, asyncio.TimeoutError) as exc:
            sock.close()
            storm.errors[f"connect: {type(exc).__name__}"] += 1
            if storm.cut_at is not None and not self.done:
                self.later(self.retry_ms)

    def later(self, ms: float) -> None:
        self.reconnects += 1
        asyncio.get_running_loop().call_later(
            ms / 1000, lambda: asyncio.ensure_future(self.connect())
        )

    # -- what the connection saw ------------------------------------------------------------
    def on_headers(self, conn: StormConn) -> None:
        if self.kind == "accept" and self.headers_at is None:
            self.headers_at = self.resumed_at = time.time()
            self.done = True

    def on_no_content(self, conn: StormConn) -> None:
        self.done = True  # the reply had ended: EventSource stops here
        if conn.after_cut and self.resumed_at is None:
            self.resumed_at = time.time()

    def on_replay(self, conn: StormConn, now: float) -> None:
        """A chat event on a connection opened after the cut: the log replayed."""
        if self.resumed_at is None:
            self.resumed_at = now

    def on_event(self, conn: StormConn, etype: bytes | None, data: bytes, now: float) -> None:
        if conn.last_id is not None:
            self.last_id = conn.last_id.decode()
        if self.kind == "sub":
            stamp = parse_stamp(data)
            n = stamp[1] if stamp else -1
            if self.storm.cut_at is not None:
                self.after.append(n)
                if n >= 1 and conn.after_cut and self.resumed_at is None:
                    self.resumed_at = now
            return
        if self.last_id is not None:
            self.after.append(int(self.last_id.rpartition(":")[2]))
        if conn.after_cut:
            self.on_replay(conn, now)
        if etype == b"close" and not conn.after_cut:
            self.closed_live = True  # the drain stopped the generation first: its close came live

    def on_end(self, conn: StormConn, had_headers: bool) -> None:
        if conn.retry is not None:
            self.retry_ms = conn.retry
        if self.done or self.storm.finished:
            return
        if self.storm.cut_at is None:
            self.storm.errors["ended before the cut"] += 1
            return
        self.later(self.retry_ms)


class Storm:
    """The clients of one storm and what they share."""

    def __init__(self, host: str, port: int, n: int) -> None:
        self.host, self.port = host, port
        self.swarm = Swarm(host, port, "/", on_event=self._dispatch, parse=lambda _d: None,
                           keep_latencies=False)  # fmt: skip
        self.sources = source_addresses(n * 2, minimum=2)
        self._next = 0
        self.cut_at: float | None = None
        self.finished = False
        self.errors: Counter[str] = Counter()
        self.clients: list[StormClient] = []

    def source(self) -> str:
        self._next += 1
        return self.sources[self._next % len(self.sources)]

    @staticmethod
    def _dispatch(conn: Any, etype: bytes | None, data: bytes, now: float) -> None:
        conn.client.on_event(conn, etype, data, now)

    async def open(self, clients: list[StormClient], concurrency: int = 256) -> None:
        sem = asyncio.Semaphore(concurrency)

        async def one(client: StormClient) -> None:
            async with sem:
                await client.connect()

        self.clients += clients
        await asyncio.gather(*(one(c) for c in clients))

    def close_all(self) -> None:
        self.finished = True
        self.swarm.close_all()


class CpuSampler:
    """The arbiter's workers' CPU time every 20 ms: (time, pid, cpu seconds)."""

    def __init__(self, arbiter: int) -> None:
        self.arbiter = psutil.Process(arbiter)
        self.samples: list[tuple[float, int, float]] = []
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        procs: dict[int, psutil.Process] = {}
        while True:
            with contextlib.suppress(psutil.Error):
                for child in self.arbiter.children():
                    procs.setdefault(child.pid, child)
            now = time.time()
            for pid, proc in list(procs.items()):
                try:
                    t = proc.cpu_times()
                    self.samples.append((now, pid, t.user + t.system))
                except psutil.Error:
                    del procs[pid]
            await asyncio.sleep(0.02)

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def cpu_at(self, pid: int, when: float) -> float | None:
        """The pid's CPU time at the last sample no later than ``when`` (else the first)."""
        mine = [(t, c) for t, p, c in self.samples if p == pid]
        before = [c for t, c in mine if t <= when]
        return before[-1] if before else (mine[0][1] if mine else None)

    def timeline(self, pid: int, t0: float, seconds: int) -> list[float]:
        """The pid's CPU % in each second after ``t0``."""
        out = []
        for i in range(seconds):
            a, b = self.cpu_at(pid, t0 + i), self.cpu_at(pid, t0 + i + 1)
            out.append(round(100 * (b - a), 0) if a is not None and b is not None else 0.0)
        return out

    def first_seen(self, pid: int) -> float | None:
        return next((t for t, p, _ in self.samples if p == pid), None)

    def last_seen(self, pid: int) -> float | None:
        seen = [t for t, p, _ in self.samples if p == pid]
        return seen[-1] if seen else None


def listen_drops() -> dict[str, int]:
    """The kernel's counts of connections its accept queues could not take (all ports):
    a client whose SYN was dropped retries it 1 s, 3 s, 7 s... later."""
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], map(int, values.split()[1:]), strict=False))
            return {k: table.get(k, 0) for k in ("ListenOverflows", "ListenDrops")}
    return {}


def drops_since(before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in listen_drops().items()}


async def spy_on_new_worker(arbiter: int, old: int) -> Any:
    """With ``BENCH_PYSPY_OUT=FILE`` (and py-spy on PATH), sample the new worker from its
    start to the end of the storm (raw folded stacks; ``bench/profile.py --report FILE``)."""
    out = os.environ.get("BENCH_PYSPY_OUT")
    if not out:
        return None
    import shutil
    import subprocess

    pyspy = shutil.which("py-spy")
    if pyspy is None:
        raise RuntimeError("BENCH_PYSPY_OUT is set but py-spy is not on PATH")
    new: list[int] = []

    def started() -> bool:
        with contextlib.suppress(psutil.Error):
            new[:] = [p.pid for p in psutil.Process(arbiter).children() if p.pid != old]
        return bool(new)

    await wait_for(started, 30, 0.005)
    return subprocess.Popen(
        [pyspy, "record", "--pid", str(new[0]), "--format", "raw", "--rate", "250",
         "--output", out, "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def worker_pid(arbiter: int) -> int:
    children = psutil.Process(arbiter).children()
    if len(children) != 1:
        raise RuntimeError(f"expected one worker, found {len(children)}")
    return children[0].pid


class Publisher:
    """Publishes through the library's broker from this process (a thread at a time)."""

    def __init__(self, broker_url: str) -> None:
        import sys
        from pathlib import Path

        root = str(Path(__file__).resolve().parents[1])  # this tree's library, as the server's
        if root not in sys.path:
            sys.path.insert(0, root)
        from flask import Flask

        from flask_sse_stream import SSE

        self.app = Flask("storm-publisher")
        self.app.config["SSE_BROKER_URL"] = broker_url
        self.sse = SSE(self.app)

    def publish_all(self, channels: list[str], n: int) -> None:
        with self.app.app_context():
            for channel in channels:
                self.sse.publish(json.dumps({"t": time.time(), "n": n}), channel=channel)


async def wait_for(predicate: Any, timeout: float, poll: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(poll)
    return True


def rel(t: float | None, t0: float) -> float | None:
    return None if t is None else round(t - t0, 3)
