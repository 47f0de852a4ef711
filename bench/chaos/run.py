"""Run the chaos scenario: servers, clients, publishers, faults, then the checker.

``python -m bench.chaos [--clients 1000] [--minutes 10] [--seed 1] [--out DIR]``;
``--quick`` is the 60-second suite mode. The run writes its logs to ``DIR`` (JSON lines)
and the checker's report (``report.md``, ``resources.png``), and exits non-zero on any
silent loss, duplicate, disorder or stuck client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import resource
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import checker
from .clients import AiSdkClient, ChannelClient, ChatClient, Client, Connection
from .cluster import Redis, Server, make_workdir

FAULTS = {  # kind: weight
    "worker_term": 3,
    "worker_kill": 2,
    "server_restart": 2,
    "redis_restart_keep": 1,
    "redis_restart_lose": 1,
    "redis_pause": 2,
    "client_cut": 3,
    "client_stall": 2,
    "burst": 2,
}


@dataclass
class Plan:
    clients: int = 1000
    seconds: float = 600.0
    seed: int = 1
    channels: int = 8
    rate: float = 4.0  # events per second per channel
    history: int = 200
    fault_every: float = 8.0
    settle: float = 15.0
    servers: int = 2
    workers: int = 2
    multi: bool = False
    ai_sdk: bool = False
    faults: dict[str, int] = field(default_factory=lambda: dict(FAULTS))


class Run:
    def __init__(self, plan: Plan, workdir: Path) -> None:
        self.plan = plan
        self.dir = workdir
        self.rng = random.Random(plan.seed)
        self.redis = Redis(workdir)
        env = {"CHAOS_HISTORY": str(plan.history), "CHAOS_HEARTBEAT": "2",
               "FLASK_TICKER_INTERVAL": "0"}
        self.servers = [Server(f"server{i}", workdir, env, plan.workers)
                        for i in range(plan.servers)]
        self.channels = [f"chaos.{i}" for i in range(plan.channels)]
        self.clients: list[Client] = []
        self.published: list[dict[str, Any]] = []
        self.faults: list[dict[str, Any]] = []
        self.samples: list[dict[str, Any]] = []
        self.next_n = {c: 0 for c in self.channels}
        self.burst: dict[str, int] = {}
        self.publishing = True
        self.faulting = True
        self.stalls: list[list[float]] = []  # when this process's own loop lagged

    def ports(self) -> list[int]:
        return [s.port for s in self.servers]

    # -- clients -----------------------------------------------------------------------

    def make_clients(self) -> None:
        plan, rng = self.plan, self.rng
        kinds = ["channel"] * 70 + ["chat_get"] * 15 + ["chat_post"] * 15
        if plan.multi:
            kinds += ["multi"] * 15
        if plan.ai_sdk:
            kinds += ["ai_sdk"] * 10
        for cid in range(plan.clients):
            kind = rng.choice(kinds)
            crng = random.Random(rng.randrange(2**32))
            slow = crng.random() < 0.05
            common: dict[str, Any] = {"cid": cid, "ports": self.ports(), "rng": crng,
                                      "slow": slow}
            client: Client
            if kind == "channel":
                client = ChannelClient(**common, channels=[crng.choice(self.channels)])
            elif kind == "multi":
                client = ChannelClient(**common, channels=crng.sample(self.channels, 3))
            elif kind == "ai_sdk":
                client = AiSdkClient(**common)
            else:
                client = ChatClient(**common, method="GET" if kind == "chat_get" else "POST")
            self.clients.append(client)

    # -- publishing ----------------------------------------------------------------------

    async def publish(self, channel: str, count: int) -> None:
        ns = [self.next_n[channel] + i + 1 for i in range(count)]
        self.next_n[channel] = ns[-1]
        t0 = time.time()
        body = json.dumps({"channel": channel, "items": [{"ch": channel, "n": n} for n in ns]})
        ids: list[str] = []
        status = "uncertain"  # the request may have reached Redis before it failed
        try:
            conn = await Connection.open(self.rng.choice(self.ports()), "POST", "/chaos/publish",
                                         {"Content-Type": "application/json"}, body.encode(),
                                         head_timeout=60)
            reply = json.loads(await asyncio.wait_for(conn.body(), 30))
            ids = reply.get("ids", [])
            status = "ok" if conn.status == 200 else "failed_after"
        except Exception:
            pass
        t1 = time.time()
        for i, n in enumerate(ns):
            if i < len(ids):
                row = {"ch": channel, "n": n, "status": "ok", "id": ids[i]}
            elif status == "failed_after" and i > len(ids):
                row = {"ch": channel, "n": n, "status": "failed"}  # never attempted
            else:
                row = {"ch": channel, "n": n, "status": "uncertain"}
            row.update(t0=round(t0, 3), t1=round(t1, 3))
            self.published.append(row)

    async def publisher(self, channel: str) -> None:
        period = 1.0 / self.plan.rate
        while self.publishing:
            count = self.burst.pop(channel, 1)
            await self.publish(channel, count)
            await asyncio.sleep(period * self.rng.uniform(0.5, 1.5))

    # -- faults --------------------------------------------------------------------------

    async def inject(self, kind: str) -> dict[str, Any]:
        rng = self.rng
        detail: dict[str, Any] = {}
        if kind in ("worker_term", "worker_kill"):
            server = rng.choice(self.servers)
            signum = signal.SIGTERM if kind == "worker_term" else signal.SIGKILL
            detail = {"server": server.name, "pid": server.signal_worker(rng, signum)}
        elif kind == "server_restart":
            server = rng.choice(self.servers)
            took = await asyncio.to_thread(server.stop)
            await asyncio.to_thread(server.start)
            detail = {"server": server.name, "exit_s": round(took, 2)}
        elif kind.startswith("redis_restart"):
            keep = kind.endswith("keep")
            await asyncio.to_thread(self.redis.restart, keep_data=keep)
        elif kind == "redis_pause":
            seconds = rng.uniform(6, 10)  # past redis-py's 5 s socket timeouts
            self.redis.pause()
            try:
                await asyncio.sleep(seconds)
            finally:
                self.redis.resume()
            detail = {"seconds": round(seconds, 1)}
        elif kind in ("client_cut", "client_stall"):
            share = 0.1 if kind == "client_cut" else 0.05
            victims = rng.sample(self.clients, max(1, int(len(self.clients) * share)))
            for client in victims:
                if kind == "client_cut":
                    client.cut()
                else:
                    client.stall(rng.uniform(5, 20))
            detail = {"clients": [c.cid for c in victims]}
        elif kind == "burst":
            channel = rng.choice(self.channels)
            self.burst[channel] = int(self.plan.history * 2.5)
            detail = {"channel": channel, "events": self.burst[channel]}
        return detail

    async def fault_loop(self) -> None:
        kinds = list(self.plan.faults)
        weights = [self.plan.faults[k] for k in kinds]
        await asyncio.sleep(self.plan.fault_every)
        while self.faulting:
            kind = self.rng.choices(kinds, weights)[0]
            t0 = time.time()
            detail = await self.inject(kind)
            self.faults.append({"t": round(t0, 3), "t_end": round(time.time(), 3),
                                "kind": kind, **detail})
            shown = "" if len(str(detail)) > 80 else detail
            print(f"[{time.strftime('%H:%M:%S')}] fault {kind} {shown}", flush=True)
            await asyncio.sleep(self.plan.fault_every * self.rng.uniform(0.5, 1.5))

    # -- sampling --------------------------------------------------------------------------

    async def lag_monitor(self) -> None:
        """Record when this process's event loop itself lagged (a busy machine): a client
        cannot read while it does, so such silences are not the servers'."""
        while True:
            before = time.time()
            await asyncio.sleep(0.2)
            after = time.time()
            if after - before > 1.0:
                self.stalls.append([round(before + 0.2, 3), round(after, 3)])

    async def sampler(self) -> None:
        while True:
            now = round(time.time(), 3)
            rows = [row for server in self.servers for row in server.sample()]
            stats = []
            for server in self.servers:
                with contextlib.suppress(Exception):
                    conn = await Connection.open(server.port, "GET", "/chaos/stats", {})
                    stats.append(json.loads(await asyncio.wait_for(conn.body(), 5)))
            self.samples.append({
                "t": now, "faulting": self.faulting,
                "rss": sum(r["rss"] for r in rows), "fds": sum(r["fds"] for r in rows),
                # in a thread: a paused Redis must not stall the clients' event loop
                "workers": len(rows), "redis_clients": await asyncio.to_thread(
                    self.redis.info_clients),
                "greenlets": {s["pid"]: s["greenlets"] for s in stats},
                "open_streams": sum(s.get("open_streams", 0) for s in stats),
            })
            await asyncio.sleep(5)

    # -- the run -------------------------------------------------------------------------------

    async def main(self) -> int:
        plan = self.plan
        self.redis.start()
        for server in self.servers:
            server.env["CHAOS_REDIS_URL"] = self.redis.url
        await asyncio.gather(*(asyncio.to_thread(s.start) for s in self.servers))
        self.make_clients()
        tasks = [asyncio.create_task(c.run()) for c in self.clients]
        publishers = [asyncio.create_task(self.publisher(ch)) for ch in self.channels]
        sampler = asyncio.create_task(self.sampler())
        lag = asyncio.create_task(self.lag_monitor())
        faults = asyncio.create_task(self.fault_loop())
        started = time.time()
        print(f"chaos: {len(self.clients)} clients, {plan.seconds:.0f} s, seed {plan.seed}, "
              f"logs in {self.dir}", flush=True)
        await asyncio.sleep(plan.seconds)
        # settle: no more faults; clients recover; then a last event on every channel
        self.faulting = False
        await faults
        self.redis.resume()
        faults_over = time.time()
        await asyncio.sleep(plan.settle)
        self.publishing = False
        await asyncio.gather(*publishers)
        for channel in self.channels:
            await self.publish(channel, 1)
        final = {ch: self.next_n[ch] for ch in self.channels}
        channel_clients = [c for c in self.clients if isinstance(c, ChannelClient)]
        chat_clients = [c for c in self.clients if not isinstance(c, ChannelClient)]
        for c in chat_clients:
            c.stop = True  # finish the reply in progress, start no other
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pending = [c for c in channel_clients
                       if any(c.latest.get(ch, 0) < final[ch] for ch in c.channels)]
            busy = [c for c in chat_clients if getattr(c, "busy", False)]
            if not pending and not busy:
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(6)  # one more sample with everything quiet
        for c in self.clients:
            c.stop = True
            c.cut()
        sampler.cancel()
        lag.cancel()
        await asyncio.gather(*tasks, sampler, lag, return_exceptions=True)
        meta = {"plan": plan.__dict__, "started": started, "faults_over": faults_over,
                "final": final, "heartbeat": 2.0, "ports": self.ports(),
                "harness_stalls": self.stalls}
        self.write(meta)
        for server in self.servers:
            server.stop()
        self.redis.stop()
        report, failed = checker.check(self.dir)
        print(report)
        return 1 if failed else 0

    def write(self, meta: dict[str, Any]) -> None:
        (self.dir / "meta.json").write_text(json.dumps(meta))
        for name, rows in (("published", self.published), ("faults", self.faults),
                           ("samples", self.samples),
                           ("clients", [c.record() for c in self.clients])):
            with open(self.dir / f"{name}.jsonl", "w") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")


def parse(argv: list[str] | None = None) -> tuple[Plan, Path]:
    p = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="60 s, 60 clients (the suite's run)")
    p.add_argument("--multi", action="store_true", help="multi-channel clients too")
    p.add_argument("--ai-sdk", action="store_true", help="AI SDK clients too")
    p.add_argument("--fault-every", type=float, default=None)
    p.add_argument("--out", default=None, help="log directory (default: a temp dir)")
    args = p.parse_args(argv)
    plan = Plan(clients=args.clients, seconds=args.minutes * 60, seed=args.seed,
                multi=args.multi, ai_sdk=args.ai_sdk)
    if args.quick:
        plan.clients, plan.seconds, plan.fault_every, plan.settle = 60, 60.0, 5.0, 10.0
    if args.fault_every is not None:
        plan.fault_every = args.fault_every
    return plan, make_workdir(args.out)


def _raise_fd_limit() -> None:
    """A thousand clients need more descriptors than the usual soft limit of 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))


def main(argv: list[str] | None = None) -> int:
    _raise_fd_limit()
    plan, workdir = parse(argv)
    workdir.mkdir(parents=True, exist_ok=True)
    run = Run(plan, workdir)
    try:
        return asyncio.run(run.main())
    finally:
        for server in run.servers:
            server.stop()
        run.redis.stop()


if __name__ == "__main__":
    sys.exit(main())
