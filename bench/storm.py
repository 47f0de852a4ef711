"""The reconnect storm, client side: every stream of a worker cut at once, then resumed.

``bench/drive.py`` runs one of two scenarios under the key ``storm``, by server:

* **resume** (ours, ``ours-storm``: channels + chat on Redis). S subscribers over C
  channels and F chat followers (each started its own reply) are open and primed (each
  has an event id). The worker gets SIGTERM: our drain ends every stream with a jittered
  ``retry:`` hint, gunicorn starts a new worker. Every client behaves like
  ``EventSource``: when its stream ends (or a connect fails) it waits the last ``retry``
  it was given and reconnects with ``Last-Event-ID``. Once the old worker has exited, one
  event is published to every channel (from this process, through the library's Redis
  broker: the "missed" event). A subscriber has **resumed** when the missed event reaches
  it on a new connection (replayed from Redis). A chat follower, like ``EventSource``,
  reconnects even after a ``close`` event (the drain stops every generation first, so
  most get "the server restarted" live): it has resumed when a new connection answers
  ``204`` (the reply is over) or replays the rest of its log.
* **accept** (``bare-gevent``): the floor of the same storm. The worker is SIGSTOPped,
  S + F clients connect at the same jittered times (0.5-1.5 s, our hint's spread), the
  worker is resumed (SIGCONT): a client has "resumed" at its response's first byte.

Reported: seconds from the cut to the last resume (and the old worker's exit, the new
one's start, the first resume), resumes/s from first to last resume (the rate to compare
with the accept storm), server CPU per resume (the new worker only, after its boot) and
redis-server's, and for ours every gap or duplicate (a subscriber must get the missed
event exactly once; a follower every seq once, up to its ``close``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
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
    latency_summary,
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


async def scenario_storm_resume(target: Any, params: dict[str, Any], spec: dict[str, Any]
                                ) -> dict[str, Any]:  # fmt: skip
    """Cut every stream of ours' worker (SIGTERM) and time the resumes on the new one."""
    from drive import cpu_seconds

    subs, followers = params["storm_subscribers"], params["storm_followers"]
    channels = [f"storm-{i}" for i in range(params["storm_channels"])]
    storm = Storm(target.host, target.port, subs + followers)
    publisher = Publisher(f"redis://127.0.0.1:{spec['redis']['port']}/0")
    arbiter = target.pids[0]
    t_open = time.monotonic()
    sub_clients = [StormClient(storm, "sub", f"/stream?channel={channels[i % len(channels)]}")
                   for i in range(subs)]  # fmt: skip
    chat_clients = [StormClient(storm, "chat", "/chat/stream?message=storm")
                    for _ in range(followers)]  # fmt: skip
    await storm.open(sub_clients + chat_clients)
    timeout = params["storm_timeout"]
    await wait_for(lambda: storm.swarm.connected >= subs + followers, timeout)
    # prime: every client has an event id to resume from
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(c.last_id is None for c in sub_clients):
        await asyncio.to_thread(publisher.publish_all, channels, 0)
        await wait_for(lambda: all(c.last_id for c in sub_clients), 1.0)
    await wait_for(lambda: all(c.last_id for c in chat_clients), timeout)
    ready_s = time.monotonic() - t_open
    primed = sum(1 for c in storm.clients if c.last_id)
    open_before = len(storm.swarm.alive)

    sampler = CpuSampler(arbiter)
    sampler.start()
    await asyncio.sleep(0.1)
    old = worker_pid(arbiter)
    load0 = os.getloadavg()
    rcpu0 = cpu_seconds([spec["redis"]["pid"]])
    drops0 = listen_drops()
    storm.cut_at = time.time()
    os.kill(old, signal.SIGTERM)
    await wait_for(lambda: gone(old), 60)
    old_exit = time.time()
    spy = await spy_on_new_worker(arbiter, old)
    await asyncio.to_thread(publisher.publish_all, channels, 1)
    missed_at = time.time()
    everyone = storm.clients
    await wait_for(lambda: all(c.resumed_at for c in everyone), timeout, 0.05)
    end = time.time()
    if spy is not None:
        spy.send_signal(signal.SIGINT)  # py-spy writes what it has
        await asyncio.to_thread(spy.wait, 30)
    rcpu1 = cpu_seconds([spec["redis"]["pid"]])
    await asyncio.sleep(0.1)
    sampler.stop()
    new = next((p for p in {p for _, p, _ in sampler.samples} if p != old), None)
    resumed = [c for c in everyone if c.resumed_at]
    times = sorted(c.resumed_at for c in resumed if c.resumed_at)
    first, last = (times[0], times[-1]) if times else (None, None)
    cpu_first = sampler.cpu_at(new, first) if new and first else None
    cpu_last = sampler.cpu_at(new, end) if new else None
    per_resume = None
    if cpu_first is not None and cpu_last is not None and len(times) > 1:
        per_resume = round(1e6 * (cpu_last - cpu_first) / (len(times) - 1), 1)
    gaps, dups = storm_checks(sub_clients, chat_clients)
    storm_s = (last - first) if first and last and last > first else None
    result: dict[str, Any] = {
        "mode": "resume",
        "streams": subs + followers,
        "subscribers": subs,
        "channels": len(channels),
        "followers": followers,
        "primed": primed,
        "open_at_cut": open_before,
        "ready_s": round(ready_s, 2),
        "resumed": len(resumed),
        "resumed_subscribers": sum(1 for c in sub_clients if c.resumed_at),
        "resumed_followers": sum(1 for c in chat_clients if c.resumed_at),
        "followers_closed_live": sum(1 for c in chat_clients if c.closed_live),
        "not_resumed": sum(1 for c in everyone if not c.resumed_at),
        "reconnects": sum(c.reconnects for c in everyone),
        "gaps": gaps + dups,
        "gap_detail": {"gaps": gaps, "dups": dups},
        "old_worker_exit_s": rel(old_exit, storm.cut_at),
        "new_worker_seen_s": rel(sampler.first_seen(new), storm.cut_at) if new else None,
        "missed_published_s": rel(missed_at, storm.cut_at),
        "first_resume_s": rel(first, storm.cut_at),
        "all_resumed_s": rel(last, storm.cut_at),
        "storm_s": round(storm_s, 3) if storm_s else None,
        "resumes_per_s": round((len(times) - 1) / storm_s, 1) if storm_s else None,
        "cpu_us_per_resume": per_resume,
        "new_worker_boot_cpu_s": round(cpu_first, 3) if cpu_first is not None else None,
        "redis_cpu_us_per_resume": round(1e6 * (rcpu1 - rcpu0) / len(times), 1) if times else None,
        "server_cpu_pct": round(100 * (cpu_last - cpu_first) / storm_s, 1)
        if storm_s and cpu_first is not None and cpu_last is not None else None,
        "resume_latency_ms": latency_summary(t - storm.cut_at for t in times),
        # per second after the cut: resumes, and the CPU % of the old and the new worker
        "timeline": timeline(times, storm.cut_at, sampler, old, new),
        "errors": dict(storm.errors.most_common(5)),
        "listen_drops": drops_since(drops0),
        "loadavg_start": [round(x, 2) for x in load0],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
    }
    storm.close_all()
    await asyncio.sleep(0.5)
    result["ok"] = bool(times)
    return result


def timeline(times: list[float], t0: float, sampler: CpuSampler, old: int, new: int | None
             ) -> dict[str, list[float]]:  # fmt: skip
    seconds = int(times[-1] - t0) + 1 if times else 0
    return {
        "resumes": bins(times, t0),
        "old_worker_cpu_pct": sampler.timeline(old, t0, seconds),
        "new_worker_cpu_pct": sampler.timeline(new, t0, seconds) if new else [],
    }


def bins(times: list[float], t0: float) -> list[int]:
    """How many of ``times`` fell in each second after ``t0``."""
    counts = [0] * (int(times[-1] - t0) + 1 if times else 0)
    for t in times:
        counts[int(t - t0)] += 1
    return counts


def storm_checks(subs: list[StormClient], chats: list[StormClient]) -> tuple[int, int]:
    """(gaps, duplicates): a subscriber gets the missed event (n=1) exactly once after the
    cut; a follower gets every seq from 1 to its close exactly once."""
    gaps = dups = 0
    for c in subs:
        ones = sum(1 for n in c.after if n == 1)
        gaps += ones == 0
        dups += max(0, ones - 1)
    for c in chats:
        seqs = c.after
        if not seqs:
            gaps += 1
            continue
        dups += len(seqs) - len(set(seqs))
        gaps += max(seqs) - len(set(seqs))
    return gaps, dups


async def scenario_storm_accept(target: Any, params: dict[str, Any]) -> dict[str, Any]:
    """The floor: the same clients at the same times against a paused bare gevent worker."""
    n = params["storm_subscribers"] + params["storm_followers"]
    storm = Storm(target.host, target.port, n)
    arbiter = target.pids[0]
    worker = worker_pid(arbiter)
    proc = psutil.Process(worker)
    load0 = os.getloadavg()
    clients = [StormClient(storm, "accept", target.stream_path) for _ in range(n)]
    storm.clients = clients
    drops0 = listen_drops()
    storm.cut_at = time.time()  # the clients lost their server "now"
    os.kill(worker, signal.SIGSTOP)
    try:
        loop = asyncio.get_running_loop()
        for c in clients:
            loop.call_later(random.uniform(*JITTER), lambda c=c: asyncio.ensure_future(c.connect()))
        await asyncio.sleep(JITTER[1] + 0.1)
        cpu0 = sum(proc.cpu_times()[:2])
        resumed_at = time.time()
    finally:
        os.kill(worker, signal.SIGCONT)
    await wait_for(lambda: all(c.resumed_at for c in clients), params["storm_timeout"], 0.05)
    cpu1 = sum(proc.cpu_times()[:2])
    times = sorted(c.resumed_at for c in clients if c.resumed_at)
    first, last = (times[0], times[-1]) if times else (None, None)
    storm_s = (last - first) if first and last and last > first else None
    result = {
        "mode": "accept",
        "streams": n,
        "resumed": len(times),
        "not_resumed": n - len(times),
        "gaps": 0,
        "paused_s": round(resumed_at - storm.cut_at, 3),
        "first_resume_s": rel(first, storm.cut_at),
        "all_resumed_s": rel(last, storm.cut_at),
        "storm_s": round(storm_s, 3) if storm_s else None,
        "resumes_per_s": round((len(times) - 1) / storm_s, 1) if storm_s else None,
        "cpu_us_per_resume": round(1e6 * (cpu1 - cpu0) / len(times), 1) if times else None,
        "server_cpu_pct": round(100 * (cpu1 - cpu0) / storm_s, 1) if storm_s else None,
        "errors": dict(storm.errors.most_common(5)),
        "listen_drops": drops_since(drops0),
        "timeline": {"resumes": bins(times, storm.cut_at)},
        "loadavg_start": [round(x, 2) for x in load0],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
    }
    storm.close_all()
    await asyncio.sleep(0.5)
    result["ok"] = bool(times)
    return result


def storm_jobs(target: Any, params: dict[str, Any], spec: dict[str, Any]) -> list[Any]:
    """The storm's (key, job) for ``drive.run``: resume with Redis, else the accept floor."""
    if spec.get("redis"):
        return [("storm", lambda: scenario_storm_resume(target, params, spec))]
    return [("storm", lambda: scenario_storm_accept(target, params))]
