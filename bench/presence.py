"""Presence, client side (``bench/drive.py`` runs it under the key ``presence``).

* ``presence_idle`` (every presence server): N subscribers of one channel are opened and
  primed, then the server's CPU is sampled while they sit idle (heartbeats only) for
  ``presence_idle_s``. Reported: CPU seconds to open and prime them (with presence on
  that includes the opening presence event of each and the coalesced counts announced
  while the others join), idle CPU %, presence events per stream. ``run.py`` divides the
  "on" servers' numbers by the "off" servers' of the same repeat.
* ``presence_redis`` (servers with Redis): streams of 32 channels each cover
  ``presence_channels`` channels ``presence_group_streams`` times over (so every worker
  has subscribers on about every channel); then ``INFO commandstats`` is sampled over
  ``presence_window_s`` idle seconds and again while streams join and leave
  (``presence_churn`` a second): Redis commands per second (all, and per command: the
  script's calls, the commands it runs, the reader's XREAD), redis-server CPU.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any
from urllib.parse import urlencode

from loadgen import Swarm, source_addresses

GROUP = 32  # channels per stream (the channel route's maximum)


class Tally:
    """Per stream: presence events, and whether a published (warm-up) event came."""

    def __init__(self) -> None:
        self.presence = 0
        self.primed: set[int] = set()

    def __call__(self, conn: Any, etype: bytes | None, data: bytes, now: float) -> None:
        if etype == b"presence":
            self.presence += 1
        else:
            self.primed.add(id(conn))


async def prime_all(target: Any, swarm: Swarm, tally: Tally, timeout: float) -> None:
    """Publish warm-up events until every stream got one (presence events do not count:
    the same priming work with presence on and off)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(tally.primed) < len(swarm.alive):
        await target.publish(1, warm=True)
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline and len(tally.primed) < len(swarm.alive):
            if len(tally.primed) != last:
                last, since = len(tally.primed), time.monotonic()
            elif time.monotonic() - since > 0.5:
                break
            await asyncio.sleep(0.02)


async def scenario_presence_idle(target: Any, params: dict[str, Any]) -> dict[str, Any]:
    from drive import cpu_seconds, drain, server_sockets

    n = params["presence_streams"]
    base = server_sockets(target.port)
    load0 = os.getloadavg()
    swarm = target.swarm(n=n, keep_latencies=False)
    tally = Tally()
    swarm.on_event = tally
    cpu0, t0 = cpu_seconds(target.pids), time.monotonic()
    await swarm.open(n, deadline=t0 + 120)
    await prime_all(target, swarm, tally, timeout=30 + n / 500)
    await asyncio.sleep(2.5)  # the last joins' presence passes (1 s each) are over
    cpu1, t1 = cpu_seconds(target.pids), time.monotonic()
    await asyncio.sleep(params["presence_idle_s"])
    cpu2, t2 = cpu_seconds(target.pids), time.monotonic()
    held = len(tally.primed)
    result = {
        "streams": held,
        "failed": swarm.failed,
        "open_cpu_s": round(cpu1 - cpu0, 3),
        "open_cpu_us_per_stream": round(1e6 * (cpu1 - cpu0) / max(held, 1), 1),
        "open_s": round(t1 - t0, 2),
        "idle_cpu_pct": round(100 * (cpu2 - cpu1) / (t2 - t1), 3),
        "presence_events_per_stream": round(tally.presence / max(held, 1), 2),
        "loadavg_start": load0,
        "loadavg_end": os.getloadavg(),
    }
    result["drain_s"] = round(await drain(target, swarm, base), 2)
    result["ok"] = held >= n * 0.99
    return result


def _commandstats(target: Any) -> dict[str, int]:
    import redis

    client = redis.Redis(host="127.0.0.1", port=int(target.redis["port"]))
    try:
        return {name.removeprefix("cmdstat_"): int(v["calls"])
                for name, v in client.info("commandstats").items()}
    finally:
        client.close()


def _rates(before: dict[str, int], after: dict[str, int], seconds: float) -> dict[str, float]:
    rates = {k: (after.get(k, 0) - before.get(k, 0)) / seconds for k in after}
    rates.pop("info", None)  # this probe's own
    return {k: round(v, 2) for k, v in sorted(rates.items(), key=lambda kv: -kv[1]) if v}


async def scenario_presence_redis(target: Any, params: dict[str, Any]) -> dict[str, Any]:
    from drive import cpu_seconds

    channels = [f"room{i}" for i in range(params["presence_channels"])]
    groups = [channels[i:i + GROUP] for i in range(0, len(channels), GROUP)]
    per_group = params["presence_group_streams"]
    load0 = os.getloadavg()
    swarms = []
    for group in groups:
        path = "/stream?" + urlencode([("channel", c) for c in group])
        swarm = Swarm(target.host, target.port, path, sources=source_addresses(per_group),
                      keep_latencies=False)
        swarms.append(swarm)
    await asyncio.gather(*(s.open(per_group) for s in swarms))
    expected = len(swarms) * per_group
    deadline = time.monotonic() + 60
    while sum(s.connected for s in swarms) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)  # the response heads (each subscribes 32 channels first)
    opened = sum(s.connected for s in swarms)
    await asyncio.sleep(3.0)  # every worker's first passes are done
    window = params["presence_window_s"]
    stats0, rcpu0, scpu0, t0 = (_commandstats(target), target.redis_cpu(),
                                cpu_seconds(target.pids), time.monotonic())
    await asyncio.sleep(window)
    stats1, rcpu1, scpu1, t1 = (_commandstats(target), target.redis_cpu(),
                                cpu_seconds(target.pids), time.monotonic())
    idle = _rates(stats0, stats1, t1 - t0)
    # churn: every second some streams leave and as many join (each on its group)
    churn = params["presence_churn"]
    deadline = time.monotonic() + window
    i = 0
    while time.monotonic() < deadline:
        for _ in range(churn):
            swarm = swarms[i % len(swarms)]
            i += 1
            if swarm.alive:
                next(iter(swarm.alive)).close()
            await swarm.connect_one()
        await asyncio.sleep(1.0)
    stats2, rcpu2, t2 = _commandstats(target), target.redis_cpu(), time.monotonic()
    busy = _rates(stats1, stats2, t2 - t1)
    for swarm in swarms:
        swarm.close_all()
    return {
        "streams": opened,
        "channels": len(channels),
        "workers": target.workers,
        "idle_commands_per_s": round(sum(idle.values()), 1),
        "idle_by_command": idle,
        "idle_redis_cpu_pct": round(100 * (rcpu1 - rcpu0) / (t1 - t0), 2),
        "idle_server_cpu_pct": round(100 * (scpu1 - scpu0) / (t1 - t0), 2),
        "churn_per_s": churn,
        "churn_commands_per_s": round(sum(busy.values()), 1),
        "churn_by_command": busy,
        "churn_redis_cpu_pct": round(100 * (rcpu2 - rcpu1) / (t2 - t1), 2),
        "loadavg_start": load0,
        "loadavg_end": os.getloadavg(),
        "ok": opened >= expected * 0.99,
    }


def presence_jobs(target: Any, params: dict[str, Any], spec: dict[str, Any]) -> list[Any]:
    """The presence scenarios' (key, job) for ``drive.run``."""
    jobs: list[Any] = []
    if spec.get("workers", 1) == 1:
        jobs.append(("presence_idle", lambda: scenario_presence_idle(target, params)))
    if spec.get("redis") and spec.get("workers", 1) > 1:
        jobs.append(("presence_redis", lambda: scenario_presence_redis(target, params)))
    return jobs
