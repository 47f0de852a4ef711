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
import os
import random
import signal
import time
from typing import Any

import psutil
from loadgen import latency_summary
from storm_clients import (
    JITTER,
    CpuSampler,
    Publisher,
    Storm,
    StormClient,
    drops_since,
    gone,
    listen_drops,
    rel,
    spy_on_new_worker,
    wait_for,
    worker_pid,
)


async def open_and_prime(storm: Storm, params: dict[str, Any], publisher: Publisher
                         ) -> tuple[list[StormClient], list[StormClient], list[str]]:  # fmt: skip
    """Open every subscriber and follower; return once each has an event id."""
    subs, followers = params["storm_subscribers"], params["storm_followers"]
    channels = [f"storm-{i}" for i in range(params["storm_channels"])]
    sub_clients = [StormClient(storm, "sub", f"/stream?channel={channels[i % len(channels)]}")
                   for i in range(subs)]  # fmt: skip
    chat_clients = [StormClient(storm, "chat", "/chat/stream?message=storm")
                    for _ in range(followers)]  # fmt: skip
    await storm.open(sub_clients + chat_clients)
    timeout = params["storm_timeout"]
    await wait_for(lambda: storm.swarm.connected >= subs + followers, timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(c.last_id is None for c in sub_clients):
        await asyncio.to_thread(publisher.publish_all, channels, 0)
        await wait_for(lambda: all(c.last_id for c in sub_clients), 1.0)
    await wait_for(lambda: all(c.last_id for c in chat_clients), timeout)
    return sub_clients, chat_clients, channels


async def scenario_storm_resume(target: Any, params: dict[str, Any], spec: dict[str, Any]
                                ) -> dict[str, Any]:  # fmt: skip
    """Cut every stream of ours' worker (SIGTERM) and time the resumes on the new one."""
    from drive import cpu_seconds

    storm = Storm(target.host, target.port,
                  params["storm_subscribers"] + params["storm_followers"])  # fmt: skip
    publisher = Publisher(f"redis://127.0.0.1:{spec['redis']['port']}/0")
    arbiter = target.pids[0]
    t_open = time.monotonic()
    subs, chats, channels = await open_and_prime(storm, params, publisher)
    before = {"ready_s": round(time.monotonic() - t_open, 2), "open_at_cut": len(storm.swarm.alive),
              "primed": sum(1 for c in storm.clients if c.last_id), "channels": len(channels)}
    sampler = CpuSampler(arbiter)
    sampler.start()
    await asyncio.sleep(0.1)
    old = worker_pid(arbiter)
    load0, drops0 = os.getloadavg(), listen_drops()
    rcpu0 = cpu_seconds([spec["redis"]["pid"]])
    storm.cut_at = time.time()
    os.kill(old, signal.SIGTERM)
    await wait_for(lambda: gone(old), 60)
    marks = {"old_exit": time.time()}
    spy = await spy_on_new_worker(arbiter, old)
    await asyncio.to_thread(publisher.publish_all, channels, 1)  # the event they missed
    marks["missed"] = time.time()
    await wait_for(lambda: all(c.resumed_at for c in storm.clients), params["storm_timeout"],
                   0.05)  # fmt: skip
    marks["end"] = time.time()
    if spy is not None:
        spy.send_signal(signal.SIGINT)  # py-spy writes what it has
        await asyncio.to_thread(spy.wait, 30)
    redis_cpu = cpu_seconds([spec["redis"]["pid"]]) - rcpu0
    await asyncio.sleep(0.1)
    sampler.stop()
    result = resume_result(storm, subs, chats, sampler, old, marks, redis_cpu)
    result.update(before)
    result["listen_drops"] = drops_since(drops0)
    result["loadavg_start"] = [round(x, 2) for x in load0]
    result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    storm.close_all()
    await asyncio.sleep(0.5)
    return result


def resume_result(storm: Storm, subs: list[StormClient], chats: list[StormClient],
                  sampler: CpuSampler, old: int, marks: dict[str, float], redis_cpu: float
                  ) -> dict[str, Any]:  # fmt: skip
    """The storm's numbers: when, how fast, at what CPU, and whether anything was lost."""
    assert storm.cut_at is not None
    cut, everyone = storm.cut_at, storm.clients
    new = next((p for p in {p for _, p, _ in sampler.samples} if p != old), None)
    times = sorted(c.resumed_at for c in everyone if c.resumed_at)
    first, last = (times[0], times[-1]) if times else (None, None)
    cpu_first = sampler.cpu_at(new, first) if new and first else None
    cpu_last = sampler.cpu_at(new, marks["end"]) if new else None
    used = cpu_last - cpu_first if cpu_first is not None and cpu_last is not None else None
    storm_s = (last - first) if first and last and last > first else None
    gaps, dups = storm_checks(subs, chats)
    return {
        "mode": "resume",
        "streams": len(everyone),
        "subscribers": len(subs),
        "followers": len(chats),
        "resumed": len(times),
        "resumed_subscribers": sum(1 for c in subs if c.resumed_at),
        "resumed_followers": sum(1 for c in chats if c.resumed_at),
        "followers_closed_live": sum(1 for c in chats if c.closed_live),
        "not_resumed": len(everyone) - len(times),
        "reconnects": sum(c.reconnects for c in everyone),
        "gaps": gaps + dups,
        "gap_detail": {"gaps": gaps, "dups": dups},
        "old_worker_exit_s": rel(marks["old_exit"], cut),
        "new_worker_seen_s": rel(sampler.first_seen(new), cut) if new else None,
        "missed_published_s": rel(marks["missed"], cut),
        "first_resume_s": rel(first, cut),
        "all_resumed_s": rel(last, cut),
        "storm_s": round(storm_s, 3) if storm_s else None,
        "resumes_per_s": round((len(times) - 1) / storm_s, 1) if storm_s else None,
        "cpu_us_per_resume": round(1e6 * used / (len(times) - 1), 1)
        if used is not None and len(times) > 1 else None,
        "new_worker_boot_cpu_s": round(cpu_first, 3) if cpu_first is not None else None,
        "redis_cpu_us_per_resume": round(1e6 * redis_cpu / len(times), 1) if times else None,
        "server_cpu_pct": round(100 * used / storm_s, 1) if storm_s and used is not None else None,
        "resume_latency_ms": latency_summary(t - cut for t in times),
        # per second after the cut: resumes, and the CPU % of the old and the new worker
        "timeline": timeline(times, cut, sampler, old, new),
        "errors": dict(storm.errors.most_common(5)),
        "ok": bool(times),
    }


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
