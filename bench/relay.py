"""The relay scenario, client side: N chat replies relayed from a loopback upstream.

``bench/drive.py`` runs :func:`scenario_relay` against a relay server (``relay-bare``,
``relay-starlette``, ``relay-ours``) that sits in front of ``bench/upstream.py``. N clients
open ``GET /chat/stream?message=...`` at once (the load generator of ``loadgen.py``);
each reply is ``chunks`` content chunks the upstream sends ``1/rate`` s apart, each
carrying ``"<due>/<sent> "`` (upstream times). Per token the client records

* added latency = receive time - the upstream's send time (what the relay adds: its
  read, parse, framing, write, and any queueing in the server);
* upstream lateness = send time - due time (the upstream kept its schedule, or it was
  the bottleneck).

Server CPU is the server's process tree only (psutil); the upstream's processes and this
client are measured apart and reported, so a reader can check neither was the limit.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from array import array
from typing import Any

from loadgen import Swarm, latency_summary, source_addresses

CONTENT = b'"content":"'


def no_stamp(_data: bytes) -> None:
    """The Swarm's own stamp parser, off: the relay's stamp is inside the content."""
    return None


class RelayTally:
    """What arrived, per token and per reply (an ``on_event`` callback of the Swarm)."""

    def __init__(self) -> None:
        self.added = array("d")
        self.late = array("d")
        self.tokens: dict[int, int] = {}
        self.last_added: dict[int, float] = {}
        self.finish: dict[str, int] = {}
        self.malformed = 0

    def __call__(self, conn: Any, etype: bytes | None, data: bytes, now: float) -> None:
        key = id(conn)
        if etype == b"close":
            try:
                reason = str(json.loads(data).get("finish_reason"))
            except (ValueError, AttributeError):
                reason = "malformed"
            self.finish[reason] = self.finish.get(reason, 0) + 1
            return
        i = data.find(CONTENT)
        if i < 0:
            self.malformed += 1
            return
        j = data.find(b"/", i)
        k = data.find(b" ", j)
        try:
            due, sent = float(data[i + len(CONTENT) : j]), float(data[j + 1 : k])
        except ValueError:
            self.malformed += 1
            return
        self.added.append(now - sent)
        self.late.append(sent - due)
        self.tokens[key] = self.tokens.get(key, 0) + 1
        self.last_added[key] = now - sent


def cpu_of(pids: list[int]) -> float:
    from drive import cpu_seconds

    return cpu_seconds(pids)


async def scenario_relay(
    target: Any, n: int, chunks: int, rate: float, upstream_pids: list[int], warm: int = 0
) -> dict[str, Any]:
    """N concurrent replies of ``chunks`` tokens at ``rate``/s through the relay."""
    from drive import client_cpu, drain, round_or_none, server_sockets

    base_sockets = server_sockets(target.port)
    if warm:
        # a long-running server: one-off costs (imports, the SDK's platform probe, pools)
        # paid before the measurement, by a few replies relayed in full
        warmup = Swarm(target.host, target.port, "/chat/stream?message=warm%20up",
                       on_event=RelayTally(), parse=no_stamp)  # fmt: skip
        await warmup.open(warm, deadline=time.monotonic() + 30)
        await warmup.wait_until(lambda: warmup.ended + warmup.failed >= warm,
                                timeout=chunks / rate + 30)  # fmt: skip
        await drain(target, warmup, base_sockets)
    tally = RelayTally()
    swarm = Swarm(
        target.host, target.port, "/chat/stream?message=relay%20bench",
        sources=source_addresses(n), on_event=tally, parse=no_stamp,
    )  # fmt: skip
    load0 = os.getloadavg()
    cpu0, up0, cl0, w0 = (cpu_of(target.pids), cpu_of(upstream_pids), client_cpu(),
                          time.monotonic())  # fmt: skip
    await swarm.open(n, deadline=time.monotonic() + 60)
    await swarm.wait_until(
        lambda: swarm.ended + swarm.failed >= n, timeout=chunks / rate + 30 + n / 50, poll=0.05
    )
    cpu1, up1, cl1, w1 = (cpu_of(target.pids), cpu_of(upstream_pids), client_cpu(),
                          time.monotonic())  # fmt: skip
    tokens = len(tally.added)
    expected = n * chunks
    lat = latency_summary(tally.added)
    late = latency_summary(tally.late)
    tail = latency_summary(tally.last_added.values())
    wall = w1 - w0
    per = (lambda c: round_or_none(1e6 * c / tokens) if tokens else None)  # noqa: E731
    complete = sum(1 for v in tally.tokens.values() if v == chunks)
    # behind: not every token arrived, or tokens waited more than 10 token intervals
    behind = tokens < expected or (lat["p99"] or 0) > 10_000 / rate
    result: dict[str, Any] = {
        "streams": n,
        "chunks": chunks,
        "rate": rate,
        "tokens": tokens,
        "tokens_expected": expected,
        "lost": expected - tokens,
        "replies_complete": complete,
        "finish": tally.finish,
        "failed": swarm.failed,
        "errors": dict(swarm.errors.most_common(3)),
        "malformed": tally.malformed,
        "latency_ms": lat,
        "p50_ms": lat["p50"],
        "p99_ms": lat["p99"],
        "max_ms": lat["max"],
        "last_token_p50_ms": tail["p50"],
        "upstream_late_p99_ms": late["p99"],
        "fell_behind": behind,
        "cpu_us_per_token": per(cpu1 - cpu0),
        "server_cpu_pct": round(100 * (cpu1 - cpu0) / wall, 1),
        "upstream_cpu_us_per_token": per(up1 - up0),
        "upstream_cpu_pct": round(100 * (up1 - up0) / wall, 1),
        "client_cpu_pct": round(100 * (cl1 - cl0) / wall, 1),
        "wall_s": round(wall, 2),
        "loadavg_start": [round(x, 2) for x in load0],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
    }
    result["drain_s"] = round(await drain(target, swarm, base_sockets), 2)
    result["ok"] = tokens > 0 and swarm.failed < n
    return result


def relay_jobs(target: Any, params: dict[str, Any], upstream_pids: list[int]) -> list[Any]:
    """(key, job) pairs for ``drive.run``: one per size in ``relay_streams``."""
    jobs = []
    for n in params["relay_streams"]:
        jobs.append((f"relay_{n}", lambda n=n: scenario_relay(
            target, n, params["relay_chunks"], params["relay_rate"], upstream_pids,
            params.get("relay_warmup", 0))))
    return jobs


async def _smoke(port: int, n: int) -> None:  # pragma: no cover - by hand
    from drive import Target

    target = Target({"host": "127.0.0.1", "port": port, "pids": []})
    print(json.dumps(await scenario_relay(target, n, 20, 20.0, [])))


if __name__ == "__main__":  # pragma: no cover
    import sys

    asyncio.run(_smoke(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 10))
