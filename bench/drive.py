"""Scenario driver: the client side of one benchmark run, in its own process.

``bench/run.py`` starts a server, then runs ``python bench/drive.py SPEC_JSON`` with the
server's pids and port; this process holds the streams (``loadgen.Swarm``), triggers
server-side publishing over HTTP, samples the server's CPU time and RSS with psutil
(the server's process tree only, so client work never counts against the server) and
prints one JSON object with the results of every requested scenario on its last line.

Scenarios (the runner picks the sizes):

* ``idle``   open N streams, prime each with one event, wait past a heartbeat, measure
             RSS growth per stream and idle CPU.
* ``fanout`` S subscribers; a burst of K server-side publishes (CPU us per delivery,
             deliveries/s), then a paced run of events (publish->receive p50/p99).
* ``floor``  no server involved: a plain Python loop of non-blocking ``send()`` of one
             framed event over N loopback sockets held by this process (CPU us per send):
             the syscall floor of one delivery, measured beside the servers.
* ``isolated`` S subscribers, closed loop with one event in flight (publish one, wait
             until all S have it, repeat): server CPU us per delivery, publish->receive
             p50/p99, and the floor measured in the same process just before.
* ``chat``   N concurrent ``/chat`` generations at R tokens/s: added latency
             (receive time - scheduled send time) p50/p99/max, server CPU us per token.
* ``churn``  connect, read the first bytes, drop, for T seconds (new streams/s); then open
             M streams, drop them all at once and time until the server has closed them.
* ``relay``  N chat replies relayed from ``bench/upstream.py`` (``bench/relay.py``).
* ``storm``  a reconnect storm after a deploy (``bench/storm.py``).
* ``presence`` presence on/off at N idle subscribers, Redis commands/s with many channels
             and workers (``bench/presence.py``).

Redis-backed servers also report redis-server CPU per delivery and its client count.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import (
    IP_BIND_ADDRESS_NO_PORT,
    Swarm,
    http_request,
    install_uvloop,
    latency_summary,
    raise_nofile_limit,
    source_addresses,
)

# ----------------------------------------------------------------------------- server side


def proc_tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        for proc in proc_tree(pid):
            with contextlib.suppress(psutil.NoSuchProcess):
                t = proc.cpu_times()
                total += t.user + t.system
    return total


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        for proc in proc_tree(pid):
            with contextlib.suppress(psutil.NoSuchProcess):
                total += proc.memory_info().rss
    return total


def server_sockets(port: int) -> int:
    """Server-side sockets of ``port`` still open (ESTABLISHED or CLOSE_WAIT).

    A stream whose client left is in CLOSE_WAIT until the server notices and closes it,
    so this counts exactly the streams the server still holds, for any server.
    """
    suffix = f":{port:04X}"
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split(None, 4)
            if parts[1].endswith(suffix) and parts[3] in ("01", "08"):
                n += 1
    return n


def client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def round_or_none(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


class Target:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.host: str = spec["host"]
        self.port: int = int(spec["port"])
        self.pids: list[int] = list(spec["pids"])
        self.redis: dict[str, Any] | None = spec.get("redis")
        self.stream_path: str = spec.get("stream_path", "/stream?channel=bench")
        self.heartbeat: float = float(spec.get("heartbeat", 5.0))
        self.workers: int = int(spec.get("workers", 1))
        self.silent_until_event: bool = bool(spec.get("silent_until_event", False))
        self.has_stats: bool = bool(spec.get("has_stats", True))
        if not self.host.startswith("127."):
            raise SystemExit("loopback addresses only")

    async def request(self, method: str, path: str, timeout: float = 120.0) -> Any:
        status, body = await http_request(self.host, self.port, method, path, timeout=timeout)
        if status != 200:
            raise RuntimeError(f"{method} {path} -> HTTP {status}: {body[:200]!r}")
        return json.loads(body) if body else None

    async def publish(self, count: int, interval: float = 0.0, warm: bool = False) -> Any:
        q = f"/publish?channel=bench&count={count}&interval={interval}"
        return await self.request("POST", q + ("&warm=1" if warm else ""))

    async def open_streams(self) -> int | None:
        if not self.has_stats or self.workers != 1:
            return None
        try:
            stats = await self.request("GET", "/stats", timeout=5)
            return int(stats["open_streams"])
        except (OSError, RuntimeError, KeyError, ValueError, asyncio.TimeoutError):
            return None

    def redis_pids(self) -> list[int]:
        """Every redis-server serving keys (a cluster's primaries)."""
        if not self.redis:
            return []
        return [int(p) for p in self.redis.get("pids", [self.redis["pid"]])]

    def redis_cpu(self) -> float:
        return cpu_seconds(self.redis_pids())

    def redis_rss(self) -> int:
        return rss_bytes(self.redis_pids())

    def redis_clients(self) -> int | None:
        """Connections to the redis servers, all primaries together."""
        if not self.redis:
            return None
        import redis

        total = 0
        for port in self.redis.get("ports", [self.redis["port"]]):
            r = redis.Redis(host="127.0.0.1", port=int(port))
            try:
                total += int(r.info("clients")["connected_clients"]) - 1  # minus this probe
            finally:
                r.close()
        return total

    def swarm(self, path: str | None = None, n: int = 0, **kw: Any) -> Swarm:
        return Swarm(
            self.host, self.port, path or self.stream_path, sources=source_addresses(n), **kw
        )


async def prime(target: Target, swarm: Swarm, timeout: float) -> float:
    """Publish warm-up events until every live stream received one; returns seconds taken.

    This is the server-agnostic "subscribed and ready" signal (some servers send nothing,
    not even headers, before the first event). The next warm-up event is only published
    once the last one stopped making progress, so a slow server is not flooded.
    """
    t0 = time.monotonic()
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        await target.publish(1, warm=True)
        last, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            primed = live_primed(swarm)
            if primed >= len(swarm.alive):
                return time.monotonic() - t0
            now = time.monotonic()
            if primed != last:
                last, last_change = primed, now
            elif now - last_change > 0.5:
                break  # this event reached everyone subscribed by now: publish another
            await asyncio.sleep(0.02)
    return time.monotonic() - t0


async def drain(target: Target, swarm: Swarm | None, baseline: int = 0) -> float:
    """Close our streams and wait (bounded) until the server has let go of them."""
    if swarm is not None:
        swarm.close_all()
    t0 = time.monotonic()
    deadline = t0 + 2 * target.heartbeat + 3.0
    poked = False
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        if server_sockets(target.port) <= baseline + 1:
            break
        if not poked and time.monotonic() - t0 > 0.3:
            # servers without EOF detection notice only when a write fails: give them one
            with contextlib.suppress(Exception):
                await target.publish(2, interval=0.05, warm=True)
            poked = True
    return time.monotonic() - t0


def live_primed(swarm: Swarm) -> int:
    return sum(1 for c in swarm.alive if c.nevents > 0)


# ----------------------------------------------------------------------------- scenarios


async def scenario_idle(target: Target, n: int) -> dict[str, Any]:
    base_sockets = server_sockets(target.port)
    rss0 = rss_bytes(target.pids)
    redis_rss0 = target.redis_rss()
    swarm = target.swarm(n=n, keep_latencies=False)
    t0 = time.monotonic()
    await swarm.open(n, deadline=t0 + 120)
    prime_s = await prime(target, swarm, timeout=30 + n / 500)
    ready_s = time.monotonic() - t0
    cpu0, w0 = cpu_seconds(target.pids), time.monotonic()
    await asyncio.sleep(max(1.0, target.heartbeat * 1.3))  # every stream sends a heartbeat
    cpu1, w1 = cpu_seconds(target.pids), time.monotonic()
    rss1 = rss_bytes(target.pids)
    held = live_primed(swarm)
    result = {
        "target": n,
        "streams": held,
        "failed": swarm.failed,
        "dropped": swarm.dropped,
        "ended_by_server": swarm.ended,
        "errors": dict(swarm.errors.most_common(3)),
        "ready_s": round(ready_s, 3),
        "prime_s": round(prime_s, 3),
        "streams_per_worker": held / target.workers,
        "rss_base_mb": round(rss0 / 2**20, 1),
        "rss_mb": round(rss1 / 2**20, 1),
        "rss_per_stream_kb": round((rss1 - rss0) / max(held, 1) / 1024, 2),
        "idle_cpu_pct": round(100 * (cpu1 - cpu0) / (w1 - w0), 2),
        "server_sockets": server_sockets(target.port) - base_sockets,
    }
    if target.redis:
        result["redis_rss_per_stream_kb"] = round(
            (target.redis_rss() - redis_rss0) / max(held, 1) / 1024, 2
        )
        result["redis_clients"] = target.redis_clients()
    result["drain_s"] = round(await drain(target, swarm, base_sockets), 2)
    result["ok"] = held > 0
    return result


async def wait_progress(
    swarm: Swarm, expected: int, stall: float, timeout: float
) -> tuple[bool, float]:
    """Wait until ``swarm.events >= expected``; give up after ``stall`` s without progress."""
    t0 = time.monotonic()
    last, last_change = -1, t0
    while swarm.events < expected:
        now = time.monotonic()
        if swarm.events != last:
            last, last_change = swarm.events, now
        elif now - last_change > stall or now - t0 > timeout:
            return False, now - t0
        await asyncio.sleep(0.01)
    return True, time.monotonic() - t0


async def scenario_fanout(
    target: Target, subs: int, events: int, lat_events: int, lat_gap: float
) -> dict[str, Any]:
    base_sockets = server_sockets(target.port)
    swarm = target.swarm(n=subs)
    await swarm.open(subs, deadline=time.monotonic() + 120)
    await prime(target, swarm, timeout=30 + subs / 500)
    listeners = live_primed(swarm)
    result: dict[str, Any] = {
        "subscribers": listeners,
        "target": subs,
        "failed": swarm.failed,
        "ended_by_server": swarm.ended,
        "errors": dict(swarm.errors.most_common(3)),
    }
    if target.redis:
        result["redis_clients"] = target.redis_clients()
    await asyncio.sleep(0.2)

    # burst: K publishes as fast as the server can take them
    swarm.reset_counts()
    expected = listeners * events
    cpu0, rcpu0 = cpu_seconds(target.pids), target.redis_cpu()
    client0 = client_cpu()
    t0 = time.time()
    pub = asyncio.create_task(target.publish(events))
    complete, _ = await wait_progress(swarm, expected, stall=5.0, timeout=120.0)
    cpu1, rcpu1 = cpu_seconds(target.pids), target.redis_cpu()
    client1, t_cpu = client_cpu(), time.time()
    t_end = swarm.last_event_time or t_cpu
    with contextlib.suppress(Exception):
        await asyncio.wait_for(pub, 30)
    delivered = swarm.events
    result.update(
        {
            "events": events,
            "deliveries": delivered,
            "lost": expected - delivered,
            "burst_complete": complete,
            "deliveries_per_s": round(delivered / max(t_end - t0, 1e-6)),
            "cpu_us_per_delivery": round_or_none(1e6 * (cpu1 - cpu0) / delivered)
            if delivered
            else None,
            "burst_latency_ms": latency_summary(swarm.latencies),
            "server_cpu_pct": round(100 * (cpu1 - cpu0) / max(t_cpu - t0, 1e-6), 1),
            "client_cpu_pct": round(100 * (client1 - client0) / max(t_cpu - t0, 1e-6), 1),
        }
    )
    if target.redis:
        result["redis_cpu_us_per_delivery"] = (
            round_or_none(1e6 * (rcpu1 - rcpu0) / delivered) if delivered else None
        )

    # closed loop: one event at a time, the next once every subscriber has the last one,
    # so the latency is that of one broadcast on an otherwise idle server (no queueing)
    await asyncio.sleep(0.2)
    swarm.reset_counts()
    live = live_primed(swarm)
    lat_complete = True
    for i in range(lat_events):
        await target.publish(1)
        done, _ = await wait_progress(swarm, live * (i + 1), stall=3.0, timeout=30.0)
        lat_complete = lat_complete and done
        if not done:
            live = live_primed(swarm)
            swarm.events = live * (i + 1)  # resynchronise after losses
        await asyncio.sleep(lat_gap)
    lat = latency_summary(swarm.latencies)
    result.update(
        {
            "latency_ms": lat,
            "p50_ms": lat["p50"],
            "p99_ms": lat["p99"],
            "paced_complete": lat_complete,
        }
    )
    result["ended_by_server_total"] = swarm.ended
    result["drain_s"] = round(await drain(target, swarm, base_sockets), 2)
    result["ok"] = listeners > 0 and delivered > 0
    return result


# One framed event as a chunked SSE response carries it (chunk size line, data, CRLF).
FLOOR_PAYLOAD = b'2A\r\ndata: {"t":1764400000.123456,"n":12345}\n\n\r\n'
FLOOR_MAX_SOCKETS = 8_000  # two descriptors per pair, and the swarm needs its own


def floor_send(n: int, sends: int = 40_000) -> dict[str, Any]:
    """CPU per non-blocking ``send()`` of one framed event on a loopback TCP socket.

    ``n`` connected pairs (capped: both ends live in this process), the accepted ends
    non-blocking with TCP_NODELAY like a server's; the loop sends one event to each in
    turn, ``sends`` in all, and this thread's CPU time (user + kernel: on loopback the
    kernel delivers to the receiver inside the sender's syscall) is divided by the sends.
    """
    n = max(1, min(n, FLOOR_MAX_SOCKETS))
    rounds = max(3, -(-sends // n))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(min(n, 4096))
    addr = listener.getsockname()
    sources = source_addresses(n, minimum=1)
    clients: list[socket.socket] = []
    servers: list[socket.socket] = []
    try:
        for i in range(n):
            c = socket.socket()
            with contextlib.suppress(OSError):
                c.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            c.bind((sources[i % len(sources)], 0))
            # RST on close: no TIME_WAIT left behind to eat the swarm's ports
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            c.connect(addr)
            clients.append(c)
            s, _ = listener.accept()
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            servers.append(s)
        payload = FLOOR_PAYLOAD
        best = None
        for _ in range(3):  # the best of three: the floor is what the syscall can do
            t0 = time.thread_time()
            for _ in range(rounds):
                for s in servers:
                    s.send(payload)
            per = (time.thread_time() - t0) / (rounds * n)
            best = per if best is None else min(best, per)
            for c in clients:  # drain, so the next round does not meet full buffers
                with contextlib.suppress(BlockingIOError):
                    c.recv(1 << 20, socket.MSG_DONTWAIT)
        assert best is not None
        return {"sockets": n, "sends": rounds * n, "cpu_us_per_send": round(best * 1e6, 3)}
    finally:
        for sock in (*servers, *clients, listener):
            sock.close()


async def scenario_floor(n: int, sends: int) -> dict[str, Any]:
    result = floor_send(n, sends)
    result["ok"] = True
    return result


async def scenario_isolated(
    target: Target, subs: int, events: int, floor_sends: int
) -> dict[str, Any]:
    """Closed loop, one event in flight: what one broadcast costs on an idle server."""
    floor = floor_send(subs, floor_sends)
    base_sockets = server_sockets(target.port)
    swarm = target.swarm(n=subs)
    await swarm.open(subs, deadline=time.monotonic() + 120)
    await prime(target, swarm, timeout=30 + subs / 500)
    listeners = live_primed(swarm)
    await asyncio.sleep(0.2)
    swarm.reset_counts()
    complete = True
    cpu0, rcpu0, w0 = cpu_seconds(target.pids), target.redis_cpu(), time.monotonic()
    for i in range(events):
        await target.publish(1)
        done, _ = await wait_progress(swarm, listeners * (i + 1), stall=3.0, timeout=30.0)
        if not done:
            complete = False
            swarm.events = listeners * (i + 1)  # resynchronise after losses
    cpu1, rcpu1, w1 = cpu_seconds(target.pids), target.redis_cpu(), time.monotonic()
    delivered = listeners * events if complete else swarm.events
    lat = latency_summary(swarm.latencies)
    per = 1e6 * (cpu1 - cpu0) / delivered if delivered else None
    result: dict[str, Any] = {
        "subscribers": listeners,
        "target": subs,
        "events": events,
        "deliveries": len(swarm.latencies),
        "lost": listeners * events - len(swarm.latencies),
        "complete": complete,
        "cpu_us_per_delivery": round_or_none(per),
        "floor_us_per_send": floor["cpu_us_per_send"],
        "floor_sockets": floor["sockets"],
        "x_floor": round(per / floor["cpu_us_per_send"], 2) if per else None,
        "latency_ms": lat,
        "p50_ms": lat["p50"],
        "p99_ms": lat["p99"],
        "server_cpu_pct": round(100 * (cpu1 - cpu0) / max(w1 - w0, 1e-6), 1),
    }
    if target.redis and delivered:
        result["redis_cpu_us_per_delivery"] = round(1e6 * (rcpu1 - rcpu0) / delivered, 3)
    result["drain_s"] = round(await drain(target, swarm, base_sockets), 2)
    result["ok"] = listeners > 0 and len(swarm.latencies) > 0
    return result


async def scenario_chat(target: Target, n: int, tokens: int, rate: float) -> dict[str, Any]:
    base_sockets = server_sockets(target.port)
    swarm = target.swarm(f"/chat?tokens={tokens}&rate={rate}", n=n)
    cpu0, w0 = cpu_seconds(target.pids), time.monotonic()
    await swarm.open(n, deadline=time.monotonic() + 60)
    await swarm.wait_until(
        lambda: swarm.ended + swarm.failed >= n, timeout=tokens / rate + 30 + n / 500, poll=0.05
    )
    cpu1, w1 = cpu_seconds(target.pids), time.monotonic()
    lat = latency_summary(swarm.latencies)
    result = {
        "streams": n,
        "tokens": tokens,
        "rate": rate,
        "completed": swarm.ended,
        "failed": swarm.failed,
        "errors": dict(swarm.errors.most_common(3)),
        "tokens_received": swarm.events,
        "tokens_expected": n * tokens,
        "latency_ms": lat,
        "p50_ms": lat["p50"],
        "p99_ms": lat["p99"],
        "max_ms": lat["max"],
        "cpu_us_per_token": round_or_none(1e6 * (cpu1 - cpu0) / swarm.events)
        if swarm.events
        else None,
        "cpu_pct": round(100 * (cpu1 - cpu0) / (w1 - w0), 1),
    }
    result["drain_s"] = round(await drain(target, swarm, base_sockets), 2)
    result["ok"] = swarm.events > 0 and swarm.failed < n
    return result


async def churn_loop(target: Target, seconds: float, concurrency: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    sources = source_addresses(1, minimum=8)  # spread TIME_WAIT over several addresses
    request = (
        f"GET {target.stream_path} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n"
        "Accept: text/event-stream\r\n\r\n"
    ).encode()
    ok = 0
    errors: dict[str, int] = {}
    ttfb: list[float] = []
    deadline = time.monotonic() + seconds
    counter = 0

    async def worker() -> None:
        nonlocal ok, counter
        while time.monotonic() < deadline:
            counter += 1
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            t0 = time.monotonic()
            try:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((sources[counter % len(sources)], 0))
                await asyncio.wait_for(loop.sock_connect(sock, (target.host, target.port)), 5)
                await loop.sock_sendall(sock, request)
                first = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
                if not first.startswith(b"HTTP/1.1 200") and not first.startswith(b"HTTP/1.0 200"):
                    raise RuntimeError(f"unexpected {first[:20]!r}")
                ok += 1
                ttfb.append(time.monotonic() - t0)
            except (OSError, RuntimeError, asyncio.TimeoutError) as exc:
                key = type(exc).__name__
                errors[key] = errors.get(key, 0) + 1
                if isinstance(exc, OSError):
                    await asyncio.sleep(0.01)
            finally:
                sock.close()

    primer: asyncio.Task[Any] | None = None
    if target.silent_until_event:
        # the server sends nothing (not even headers) until an event: keep events coming
        primer = asyncio.create_task(
            target.publish(int(seconds / 0.02) + 10, interval=0.02, warm=True)
        )
    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.monotonic() - t0
    if primer is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(primer, 10)
    lat = latency_summary(ttfb)
    return {
        "seconds": round(elapsed, 2),
        "concurrency": concurrency,
        "streams_opened": ok,
        "streams_per_s": round(ok / elapsed, 1),
        "connect_errors": errors,
        "ttfb_p50_ms": lat["p50"],
        "ttfb_p99_ms": lat["p99"],
    }


async def scenario_churn(
    target: Target, seconds: float, concurrency: int, notice_n: int
) -> dict[str, Any]:
    base_sockets = server_sockets(target.port)
    result = await churn_loop(target, seconds, concurrency)
    result["churn_drain_s"] = round(await drain(target, None, base_sockets), 2)

    # time to notice a disconnect: hold M streams, drop them all, watch the server let go
    base_sockets = server_sockets(target.port)
    base_open = await target.open_streams()
    swarm = target.swarm(n=notice_n, keep_latencies=False)
    await swarm.open(notice_n, deadline=time.monotonic() + 60)
    await prime(target, swarm, timeout=20 + notice_n / 500)
    await asyncio.sleep(0.3)
    held = server_sockets(target.port) - base_sockets
    swarm.close_all()
    t0 = time.monotonic()
    timeout = 2 * target.heartbeat + 1.0
    half_s = all_s = stats_s = None
    remaining = held
    while time.monotonic() - t0 < timeout:
        await asyncio.sleep(0.05)
        remaining = server_sockets(target.port) - base_sockets
        now = time.monotonic() - t0
        if half_s is None and remaining <= held / 2:
            half_s = now
        if remaining <= 1:  # the /stats probe may hold one
            all_s = now
        if base_open is not None and stats_s is None:
            open_now = await target.open_streams()
            if open_now is not None and open_now <= base_open:
                stats_s = time.monotonic() - t0
        if all_s is not None and (stats_s is not None or base_open is None):
            break
    result.update(
        {
            "notice_streams": held,
            "notice_half_s": round_or_none(half_s),
            "notice_all_s": round_or_none(all_s),
            "notice_stats_s": round_or_none(stats_s),
            "notice_timeout_s": timeout,
            "notice_left": max(0, remaining),
        }
    )
    await drain(target, None, base_sockets)
    result["ok"] = result["streams_opened"] > 0 and held > 0
    return result


# ----------------------------------------------------------------------------- main


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    target = Target(spec)
    params = spec["params"]
    out: dict[str, Any] = {}
    jobs: list[tuple[str, Callable[[], Awaitable[dict[str, Any]]]]] = []
    for name in spec["scenarios"]:
        if name == "idle":
            jobs.append(("idle", lambda: scenario_idle(target, params["idle_streams"])))
        elif name == "fanout":
            for subs, events, lat_events, lat_gap in params["fanout"]:
                jobs.append(
                    (
                        f"fanout_{subs}",
                        lambda s=subs, e=events, le=lat_events, lg=lat_gap: scenario_fanout(
                            target, s, e, le, lg
                        ),
                    )
                )
        elif name == "floor":
            for subs, _ in params["isolated"]:
                jobs.append(
                    (f"floor_{subs}", lambda s=subs: scenario_floor(s, params["floor_sends"]))
                )
        elif name == "isolated":
            for subs, events in params["isolated"]:
                jobs.append(
                    (
                        f"isolated_{subs}",
                        lambda s=subs, e=events: scenario_isolated(
                            target, s, e, params["floor_sends"]
                        ),
                    )
                )
        elif name == "chat":
            for n in params["chat_streams"]:
                jobs.append(
                    (
                        f"chat_{n}",
                        lambda n=n: scenario_chat(
                            target, n, params["chat_tokens"], params["chat_rate"]
                        ),
                    )
                )
        elif name == "churn":
            jobs.append(
                (
                    "churn",
                    lambda: scenario_churn(
                        target,
                        params["churn_seconds"],
                        params["churn_concurrency"],
                        params["notice_streams"],
                    ),
                )
            )
        elif name == "relay":
            from relay import relay_jobs

            jobs += relay_jobs(target, params, list(spec.get("upstream_pids") or []))
        elif name == "storm":
            from storm import storm_jobs

            jobs += storm_jobs(target, params, spec)
        elif name == "presence":
            from presence import presence_jobs

            jobs += presence_jobs(target, params, spec)
        else:
            raise SystemExit(f"unknown scenario {name}")
    for key, job in jobs:
        t0 = time.monotonic()
        try:
            out[key] = await job()
        except Exception as exc:  # report and carry on with the next scenario
            out[key] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        out[key]["wall_s"] = round(time.monotonic() - t0, 2)
        print(f"  {key}: {json.dumps(out[key])[:400]}", file=sys.stderr, flush=True)
    return out


def main() -> None:
    spec = json.loads(sys.argv[1])
    raise_nofile_limit()
    loop_name = install_uvloop()
    result = asyncio.run(run(spec))
    result["_client"] = {"loop": loop_name}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
