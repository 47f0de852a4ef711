"""What a Redis primary costs per publish, by the number of processes following: one
server against a 3-primary Redis Cluster, in one run. The numbers of the scale plan in
docs/deployment.md.

    python bench/redis_scale.py                       # W = 1, 4, 8 followers, 10 s each
    python bench/redis_scale.py --workers 1,8 --seconds 5 --channels 60
    python bench/redis_scale.py --replicas 1          # the cluster with replicas, WAIT off/on

For each topology and each W: start the servers (``redis-server``, no persistence; the
cluster without replicas unless ``--replicas``), start W follower processes (each is what
one app worker does, under gevent: ``RedisBroker(url)``, one subscriber on each of the
C channels, a counting sink), then one publisher process publishing round-robin over the C channels
as fast as it can (``RedisBroker.publish``: ``XADD``, in a cluster plus its doorbell,
with ``--replicas`` also measured with ``WAIT 1``). Reported, per topology and W:
publishes per second (one publisher, one connection at a time: a latency figure, not the
server's ceiling),
redis-server CPU µs per publish (all primaries together, and the busiest primary's share),
each primary's own CPU per publish it served above its idle burn (a cluster's cron and
gossip cost CPU with no traffic: measured for a second first), follower CPU µs per
delivery, XREADs per publish, deliveries lost and resets, reading connections per
follower and primary, and the load average around the run. A primary's capacity at a
CPU budget is then ``budget / primary_us_per_publish``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

IDLE_SECONDS = 1.0
BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT)]


def cpu_seconds(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


@contextlib.contextmanager
def single() -> Iterator[dict[str, Any]]:
    from tests.servers import free_port

    port = free_port()
    workdir = tempfile.mkdtemp(prefix="bench-scale-")
    proc = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
         "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        import redis

        from tests.redis_topologies import wait_until

        wait_until(lambda: redis.Redis(port=port).ping(), 10, "redis-server up")
        yield {"url": f"redis://127.0.0.1:{port}/0", "primaries": {port: proc.pid}}
    finally:
        proc.kill()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def cluster(replicas: int) -> Iterator[dict[str, Any]]:
    from tests.redis_topologies import redis_cluster

    with redis_cluster(primaries=3, replicas=replicas) as found:
        yield {"url": found.url(), "cluster": found,
               "primaries": {n.port: n.proc.pid for n in found.primaries()}}


def channel_names(setup: dict[str, Any], count: int) -> list[str]:
    """``count`` channels, spread evenly over the primaries in a cluster (a multiple of
    3 spreads them exactly); ``setup["owned"]`` counts them per primary."""
    found = setup.get("cluster")
    if found is None:
        setup["owned"] = {port: count for port in setup["primaries"]}
        return [f"scale{i}" for i in range(count)]
    per = found.names_per_primary(-(-count // 3), "scale{}", make_key=lambda n: "sse:" + n)
    names = [c for group in zip(*per.values(), strict=False) for c in group][:count]
    setup["owned"] = {port: sum(1 for c in names if c in owned) for port, owned in per.items()}
    return names


FOLLOWER = r"""
from gevent import monkey
monkey.patch_all()  # as in a gunicorn gevent worker: the reader's loops are greenlets
import json, sys, threading, time, resource
from flask_sse_stream.brokers.redis import RedisBroker
from flask_sse_stream.runtime import CloseReason

class Count:
    reason = None
    def offer(self, chunk):
        return True
    def close(self, reason):
        self.reason = reason

url, channels = sys.argv[1], json.loads(sys.argv[2])
broker = RedisBroker(url, history_size=1000)
subs = [broker.subscribe(c, Count()) for c in channels]
print("ready", flush=True)
def line():
    # stdin read in a native thread: the hub (and the reader) run meanwhile
    from gevent import get_hub
    return get_hub().threadpool.apply(sys.stdin.readline)

line()  # the publisher starts
u0 = resource.getrusage(resource.RUSAGE_SELF)
d0 = broker.counters.delivered
line()  # the publisher is done: report once the last events have arrived
import gevent
seen = -1
while broker.counters.delivered != seen:
    seen = broker.counters.delivered
    gevent.sleep(0.3)
u1 = resource.getrusage(resource.RUSAGE_SELF)
cpu = (u1.ru_utime + u1.ru_stime) - (u0.ru_utime + u0.ru_stime)
closed = sum(1 for s in subs if s.sink.reason is not None)
print(json.dumps({"delivered": seen - d0, "cpu": cpu, "closed": closed,
                  "resets": broker.counters.resets}),
      flush=True)
"""

PUBLISHER = r"""
import json, sys, time
from flask_sse_stream.brokers.redis import RedisBroker
url, channels, seconds = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3])
wait = sys.argv[4] == "1"
broker = (RedisBroker(url, history_size=1000, wait_replicas=1, wait_timeout=1.0) if wait
          else RedisBroker(url, history_size=1000))
for c in channels:
    broker.publish(c, "warm")
print("ready", flush=True)
sys.stdin.readline()
n, failed, end = 0, 0, time.monotonic() + seconds
t0 = time.monotonic()
while time.monotonic() < end:
    for c in channels:
        try:
            broker.publish(c, '{"n":%d}' % n)
            n += 1
        except Exception:
            failed += 1
print(json.dumps({"published": n, "failed": failed, "elapsed": time.monotonic() - t0}),
      flush=True)
"""


def spawn(code: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.environ.get("BENCH_LIBRARY", str(ROOT))}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, cwd=ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def readline(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError("a bench process exited early")
    return line


def tell(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()


def command_calls(primaries: dict[int, int], command: str) -> int:
    """How often the primaries ran ``command`` so far (``INFO commandstats``)."""
    import redis

    total = 0
    for port in primaries:
        stats = redis.Redis(port=port).info("commandstats")
        total += int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))
    return total


def reading_connections(setup: dict[str, Any], pids: list[int]) -> int:
    """The most connections one follower holds to one primary (CLIENT LIST, matched to
    the follower's sockets)."""
    import psutil
    import redis

    owner = {}
    for pid in pids:
        for conn in psutil.Process(pid).net_connections(kind="tcp"):
            if conn.raddr and conn.status == psutil.CONN_ESTABLISHED:
                owner[(conn.laddr.ip, conn.laddr.port)] = pid
    most = 0
    for port in setup["primaries"]:
        counts: dict[int, int] = {}
        for client in redis.Redis(port=port).client_list():
            host, _, cport = client["addr"].rpartition(":")
            pid = owner.get((host, int(cport)))
            if pid is not None:
                counts[pid] = counts.get(pid, 0) + 1
        most = max([most, *counts.values()])
    return most


def measure(setup: dict[str, Any], workers: int, channels: list[str], seconds: float,
            wait: bool) -> dict[str, Any]:
    followers = [spawn(FOLLOWER, setup["url"], json.dumps(channels)) for _ in range(workers)]
    publisher = spawn(PUBLISHER, setup["url"], json.dumps(channels), str(seconds),
                      "1" if wait else "0")
    try:
        for proc in [*followers, publisher]:
            readline(proc)
        time.sleep(0.5)  # the followers' doorbells settle (nothing to await across processes)
        connections = reading_connections(setup, [p.pid for p in followers])
        primaries = setup["primaries"]
        idle0 = {port: cpu_seconds([pid]) for port, pid in primaries.items()}
        time.sleep(IDLE_SECONDS)  # what the primaries burn with no traffic (cron, gossip)
        idle = {port: (cpu_seconds([pid]) - idle0[port]) / IDLE_SECONDS
                for port, pid in primaries.items()}
        load0 = os.getloadavg()[0]
        reads0 = command_calls(primaries, "xread")
        r0 = {port: cpu_seconds([pid]) for port, pid in primaries.items()}
        for proc in followers:
            tell(proc)
        tell(publisher)
        published = json.loads(readline(publisher))
        r1 = {port: cpu_seconds([pid]) for port, pid in primaries.items()}
        reads = command_calls(primaries, "xread") - reads0
        for proc in followers:
            tell(proc)
        results = [json.loads(readline(proc)) for proc in followers]
    finally:
        for proc in [*followers, publisher]:
            proc.kill()
            proc.wait(10)
    n = published["published"]
    elapsed = published["elapsed"]
    per_primary = {port: r1[port] - r0[port] for port in primaries}
    # each primary's own CPU per publish it served, above its idle burn
    served = {port: n * owned / len(channels) for port, owned in setup["owned"].items()}
    marginal = [(per_primary[port] - idle[port] * elapsed) / max(served[port], 1)
                for port in primaries]
    delivered = sum(r["delivered"] for r in results)
    return {
        "workers": workers,
        "channels": len(channels),
        "publishes_per_s": round(n / published["elapsed"]),
        "publish_failed": published["failed"],
        "redis_cpu_us_per_publish": round(1e6 * sum(per_primary.values()) / max(n, 1), 2),
        "primary_us_per_publish": round(1e6 * max(marginal), 2),
        "idle_cpu_pct_per_primary": round(100 * max(idle.values()), 2),
        "busiest_primary_share": round(max(per_primary.values()) / max(sum(
            per_primary.values()), 1e-9), 2),
        "redis_cpu_pct_busiest": round(100 * max(per_primary.values()) / published["elapsed"]),
        "follower_cpu_us_per_delivery": round(
            1e6 * sum(r["cpu"] for r in results) / max(delivered, 1), 2),
        "xreads_per_publish": round(reads / max(n, 1), 3),
        "lost": n * workers - delivered,
        "resets": sum(r["resets"] for r in results),
        "ended": sum(r["closed"] for r in results),
        "reading_connections_per_primary": connections,
        "loadavg_start": round(load0, 2),
        "loadavg_end": round(os.getloadavg()[0], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,4,8")
    parser.add_argument("--channels", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--replicas", type=int, default=0,
                        help="per primary (the cluster only); then with and without WAIT 1")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    rows = []
    topologies: list[tuple[str, Any]] = [] if args.replicas else [("single", single)]
    topologies.append((f"cluster-3x{1 + args.replicas}", lambda: cluster(args.replicas)))
    waits = [False, True] if args.replicas else [False]
    for name, start in topologies:
        with start() as setup:
            channels = channel_names(setup, args.channels)
            for wait in waits:
                for workers in counts:
                    row = {"topology": name + (" WAIT" if wait else ""),
                           **measure(setup, workers, channels, args.seconds, wait)}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    columns = ["topology", "workers", "publishes_per_s", "redis_cpu_us_per_publish",
               "primary_us_per_publish", "idle_cpu_pct_per_primary", "redis_cpu_pct_busiest",
               "follower_cpu_us_per_delivery", "xreads_per_publish", "lost", "resets",
               "reading_connections_per_primary", "loadavg_start", "loadavg_end"]
    print()
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
