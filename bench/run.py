"""Benchmark runner: flask-sse-stream against its peers, on loopback, in one run.

    python bench/run.py                 # full run (~15 min), 3 repeats, every server
    python bench/run.py --quick         # smoke run (< 60 s), tiny numbers
    python bench/run.py --scenarios fanout --servers sse-starlette,ours-mem --repeat 5

For every repeat, for every server, for every scenario group: start the server (and a
throwaway redis-server when it needs one) on a free loopback port, wait until it
answers, run ``bench/drive.py`` in its own process (so client CPU never counts against
the server), stop everything. Servers are interleaved inside each repeat, so slow drift
of a noisy machine hits all of them alike; ratios are computed within each repeat (same
run) and the median over repeats is reported, next to median absolute numbers.

Writes ``bench/results/latest.json`` (everything) and ``bench/results/bench.png``, prints
Markdown tables, and exits non-zero if any scenario failed outright.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SERVERS_DIR = BENCH / "servers"
SCENARIOS = ("idle", "floor", "fanout", "isolated", "chat", "churn", "redis", "relay", "storm",
             "presence")
# the default run; relay, storm and presence are asked for by name (--scenarios relay,storm)
DEFAULT_SCENARIOS = ("idle", "floor", "fanout", "isolated", "chat", "churn", "redis")
LEGACY = DEFAULT_SCENARIOS  # what the servers of the first releases serve
PEERS = ("sse-starlette", "flask-sse")
# the issue-13 paths are judged against the hand-written gevent server too
PEERS_BY_PREFIX = {
    "isolated": ("bare-gevent", "sse-starlette"),
    "chat": ("bare-gevent", "sse-starlette"),
    "redis": ("flask-sse",),
    "relay": ("relay-bare", "relay-starlette"),
    "storm": ("bare-gevent",),
}
FLOOR = "floor"  # the pseudo-server under which the floor scenario is reported


@dataclass(frozen=True)
class ServerSpec:
    name: str
    kind: str  # "gunicorn" | "uvicorn"
    app: str  # module:attr in bench/servers
    workers: int = 1
    redis: bool = False
    env: dict[str, str] = field(default_factory=dict)
    silent_until_event: bool = False  # sends nothing, not even headers, before an event
    broadcast_across_workers: bool = True  # False: fan-out only reaches one worker
    ours: bool = False
    note: str = ""
    config: str = "gunicorn_bench.py"  # the gunicorn config file in bench/servers
    upstream: bool = False  # needs bench/upstream.py (BENCH_UPSTREAM_URL)
    cluster: bool = False  # redis: a Redis Cluster of 3 primaries instead of one server
    # another checkout of the library to run instead of this one (the directory is the
    # value of this environment variable): the redesign's before/after comparison
    code_from: str | None = None
    scenarios: tuple[str, ...] = LEGACY  # the scenarios this server serves

    def serves(self, scenario: str) -> bool:
        return scenario in self.scenarios or (scenario == "floor" and "isolated" in self.scenarios)


SERVER_SPECS: dict[str, ServerSpec] = {
    s.name: s
    for s in [
        ServerSpec("sse-starlette", "uvicorn", "sse_starlette_app:app", note="uvicorn+uvloop"),
        ServerSpec(
            "flask-sse",
            "gunicorn",
            "flask_sse_app:app",
            redis=True,
            silent_until_event=True,
            note="gunicorn gevent + Redis pub/sub",
        ),
        ServerSpec(
            "bare-gevent", "gunicorn", "bare_gevent_app:app", note="ceiling",
            scenarios=(*LEGACY, "storm"),
        ),
        ServerSpec(
            "ours-mem",
            "gunicorn",
            "ours_app:app",
            env={"BENCH_BROKER_URL": "memory://"},
            ours=True,
        ),
        ServerSpec(
            "ours-before",
            "gunicorn",
            "ours_app:app",
            env={"BENCH_BROKER_URL": "memory://"},
            ours=True,
            code_from="BENCH_BEFORE",
            note="ours-mem on the code before the redesign (BENCH_BEFORE=<a checkout of "
            "0caf079>; plain -k gevent, where that code armed its direct writes itself)",
        ),
        ServerSpec(
            "ours-mem-wsgi",
            "gunicorn",
            "ours_app:app",
            env={"BENCH_BROKER_URL": "memory://", "BENCH_DIRECT_WRITE": "0"},
            ours=True,
            note="ours-mem with SSE_DIRECT_WRITE off: every write through the WSGI path",
        ),
        ServerSpec(
            "ours-mem-2w",
            "gunicorn",
            "ours_app:app",
            workers=2,
            env={"BENCH_BROKER_URL": "memory://"},
            broadcast_across_workers=False,
            ours=True,
            note="memory broker is per process: no fan-out",
        ),
        ServerSpec("ours-redis", "gunicorn", "ours_app:app", redis=True, ours=True),
        ServerSpec("ours-redis-2w", "gunicorn", "ours_app:app", workers=2, redis=True, ours=True),
        ServerSpec(
            "ours-cluster", "gunicorn", "ours_app:app", redis=True, cluster=True, ours=True,
            note="redis+cluster:// on 3 primaries (no replicas): doorbells, reads per node",
        ),
        # the relay: three servers in front of the same upstream (bench/upstream.py)
        ServerSpec(
            "relay-bare", "python", "relay_bare.py", upstream=True, scenarios=("relay",),
            note="hand-written gevent relay over raw sockets (the Python floor)",
        ),
        ServerSpec(
            "relay-starlette", "uvicorn", "relay_starlette_app:app", upstream=True,
            scenarios=("relay",), note="sse-starlette + openai.AsyncOpenAI on uvicorn",
        ),
        ServerSpec(
            "relay-ours", "gunicorn", "relay_ours_app:app", config="gunicorn_ours.py",
            upstream=True, ours=True, scenarios=("relay",),
            note="chat blueprint + OpenAIBackend, packaged gunicorn config",
        ),
        # the storm: ours with Redis (history and generations survive the worker)
        ServerSpec(
            "ours-storm", "gunicorn", "storm_app:app", config="gunicorn_ours.py", redis=True,
            ours=True, scenarios=("storm",),
            note="channels + chat blueprint, Redis broker, packaged gunicorn config",
        ),
        # presence (issue 24): the same app with SSE_PRESENCE off and on, in one repeat
        *(
            ServerSpec(
                f"presence-{broker}-{state}", "gunicorn", "presence_app:app",
                config="gunicorn_ours.py", redis=broker == "redis", ours=True,
                env={"BENCH_PRESENCE": "1" if state == "on" else "0",
                     **({"BENCH_BROKER_URL": "memory://"} if broker == "mem" else {})},
                scenarios=("presence",), note=f"SSE_PRESENCE {state}, {broker} broker",
            )
            for broker in ("mem", "redis") for state in ("off", "on")
        ),
        ServerSpec(
            "presence-redis-4w", "gunicorn", "presence_app:app", config="gunicorn_ours.py",
            redis=True, ours=True, workers=4, env={"BENCH_PRESENCE": "1"},
            scenarios=("presence",), note="SSE_PRESENCE on, Redis broker, 4 workers",
        ),
    ]
}
RELAY_SERVERS = ("relay-bare", "relay-starlette", "relay-ours")
STORM_SERVERS = ("bare-gevent", "ours-storm")
QUICK_SERVERS = ("sse-starlette", "flask-sse", "bare-gevent", "ours-mem", "ours-redis")
REDIS_SERVERS = ("flask-sse", "ours-mem", "ours-redis", "ours-redis-2w", "ours-cluster")

FULL_PARAMS: dict[str, Any] = {
    "heartbeat": 3.0,
    "idle_streams": 5_000,
    # (subscribers, burst events, closed-loop latency events, gap between them in s)
    "fanout": [(1_000, 100, 20, 0.02), (10_000, 10, 5, 0.05)],
    # (subscribers, events): closed loop, one event in flight (CPU per delivery, p50/p99)
    "isolated": [(1_000, 40), (10_000, 10)],
    "floor_sends": 40_000,
    "chat_streams": [250, 1_000],
    # 100 tokens (5 s) per reply: long enough that the connection burst at the start
    # does not stand in for the steady streaming cost (real replies are longer still)
    "chat_tokens": 100,
    "chat_rate": 20.0,
    "churn_seconds": 3.0,
    "churn_concurrency": 50,
    "notice_streams": 1_000,
    "driver_timeout": 900,
    # relay: N concurrent replies of C chunks at R chunks/s each, upstream with P processes
    "relay_streams": [100, 1_000],
    "relay_chunks": 100,
    "relay_rate": 20.0,
    "relay_upstream_procs": 2,
    "relay_warmup": 5,  # replies relayed in full before each measurement (one-off costs)
    # storm: subscribers over channels and chat followers cut together, then resumed
    "storm_subscribers": 10_000,
    "storm_channels": 100,
    "storm_followers": 1_000,
    "storm_timeout": 180.0,
    # presence: idle subscribers with it on and off; channels x workers on Redis
    "presence_streams": 10_000,
    "presence_idle_s": 15.0,
    "presence_channels": 1_000,
    "presence_group_streams": 16,  # streams per group of 32 channels (4 workers: ~99 %)
    "presence_window_s": 20.0,
    "presence_churn": 20,  # streams leaving and as many joining per second
}
QUICK_PARAMS: dict[str, Any] = {
    "heartbeat": 0.5,
    "idle_streams": 50,
    "fanout": [(50, 200, 10, 0.01)],
    "isolated": [(50, 5)],
    "floor_sends": 5_000,
    "chat_streams": [20],
    "chat_tokens": 10,
    "chat_rate": 20.0,
    "churn_seconds": 1.0,
    "churn_concurrency": 10,
    "notice_streams": 20,
    "driver_timeout": 90,
    "relay_streams": [10],
    "relay_chunks": 10,
    "relay_rate": 20.0,
    "relay_upstream_procs": 1,
    "relay_warmup": 2,
    "storm_subscribers": 40,
    "storm_channels": 4,
    "storm_followers": 10,
    "storm_timeout": 40.0,
    "presence_streams": 50,
    "presence_idle_s": 2.0,
    "presence_channels": 64,
    "presence_group_streams": 4,
    "presence_window_s": 3.0,
    "presence_churn": 2,
}


# --------------------------------------------------------------------------- processes


def raise_nofile_limit() -> int:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(port: int, proc: subprocess.Popen[bytes], path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            status = conn.getresponse().status
            conn.close()
            if status == 200:
                return
            last = f"HTTP {status}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.05)  # polling a port that has no event to await
    raise TimeoutError(f"server on {port} not ready after {timeout}s ({last})")


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited early with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM the process we started, then SIGKILL it and its children if needed."""
    if proc.poll() is not None:
        return
    import psutil

    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


@dataclass
class Running:
    port: int
    pid: int
    redis: dict[str, Any] | None
    upstream: dict[str, Any] | None = None


@contextlib.contextmanager
def serve(
    spec: ServerSpec, heartbeat: float, log_dir: Path, params: dict[str, Any] | None = None
) -> Iterator[Running]:
    params = params or {}
    procs: list[subprocess.Popen[bytes]] = []
    tmp = tempfile.mkdtemp(prefix="bench-redis-")
    stack = contextlib.ExitStack()
    try:
        env = dict(os.environ)
        env.update(spec.env)
        env["BENCH_HEARTBEAT"] = str(heartbeat)
        env["BENCH_WORKERS"] = str(spec.workers)
        code = [str(ROOT)]
        if spec.code_from:
            tree = os.environ.get(spec.code_from)
            if not tree:
                raise RuntimeError(f"{spec.name}: set {spec.code_from} to a checkout to run")
            code.insert(0, tree)  # found first: its flask_sse_stream, this repo's bench
        elif spec.ours:  # the library's defaults: our worker class (direct writes and all)
            env["BENCH_WORKER_CLASS"] = "flask_sse_stream.contrib.gunicorn.GeventWorker"
        env["PYTHONPATH"] = os.pathsep.join([*code, str(SERVERS_DIR)])
        env["PYTHONUNBUFFERED"] = "1"
        redis_info = None
        if spec.cluster:
            cluster = stack.enter_context(_redis_cluster())
            env["BENCH_BROKER_URL"] = env["BENCH_REDIS_URL"] = cluster.url()
            primaries = cluster.primaries()
            redis_info = {"port": primaries[0].port, "pid": primaries[0].proc.pid,
                          "ports": [n.port for n in primaries],
                          "pids": [n.proc.pid for n in primaries]}
        elif spec.redis:
            rport = free_port()
            rlog = open(log_dir / f"{spec.name}.redis.log", "ab")  # noqa: SIM115
            rproc = subprocess.Popen(
                [
                    shutil.which("redis-server") or "redis-server",
                    "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--protected-mode", "no", "--dir", tmp,
                    "--maxclients", "19000", "--loglevel", "warning",
                ],
                stdout=rlog, stderr=subprocess.STDOUT, cwd=tmp,
            )  # fmt: skip
            procs.append(rproc)
            wait_port(rport, rproc, 15)
            redis_url = f"redis://127.0.0.1:{rport}/0"
            env["BENCH_REDIS_URL"] = redis_url
            if spec.ours:
                env["BENCH_BROKER_URL"] = redis_url
            redis_info = {"port": rport, "pid": rproc.pid}
        upstream_info = None
        if spec.upstream:
            uport = free_port()
            ulog = open(log_dir / f"{spec.name}.upstream.log", "ab")  # noqa: SIM115
            uproc = subprocess.Popen(
                [sys.executable, str(BENCH / "upstream.py"), "--port", str(uport),
                 "--procs", str(params.get("relay_upstream_procs", 1))],
                stdout=ulog, stderr=subprocess.STDOUT, cwd=ROOT,
            )  # fmt: skip
            procs.append(uproc)
            wait_http(uport, uproc, "/stats", 15)
            chunks, rate = params.get("relay_chunks", 100), params.get("relay_rate", 20.0)
            env["BENCH_UPSTREAM_URL"] = f"http://127.0.0.1:{uport}/c{chunks}/i{1 / rate:g}/v1"
            upstream_info = {"port": uport, "pid": uproc.pid}
        port = free_port()
        if spec.kind == "uvicorn":
            cmd = [
                sys.executable, "-m", "uvicorn", spec.app, "--app-dir", str(SERVERS_DIR),
                "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                "--no-access-log", "--backlog", "4096", "--workers", str(spec.workers),
            ]  # fmt: skip
        elif spec.kind == "python":
            cmd = [sys.executable, str(SERVERS_DIR / spec.app), "--port", str(port)]
        else:
            cmd = [
                sys.executable, "-m", "gunicorn", "-c", str(SERVERS_DIR / spec.config),
                "--chdir", str(SERVERS_DIR), "-b", f"127.0.0.1:{port}", spec.app,
            ]  # fmt: skip
        log = open(log_dir / f"{spec.name}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        procs.append(proc)
        wait_http(port, proc, "/stats", 30)
        if spec.workers > 1:  # every worker up (each answers /stats on its own)
            import psutil

            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                if len(psutil.Process(proc.pid).children()) >= spec.workers:
                    break
                time.sleep(0.05)
            time.sleep(0.5)
        yield Running(port, proc.pid, redis_info, upstream_info)
    finally:
        for p in reversed(procs):
            stop(p)
        stack.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _redis_cluster() -> Any:
    """The test suite's Redis Cluster fixture (real redis-server processes on loopback)."""
    sys.path.insert(0, str(ROOT))
    from tests.redis_topologies import redis_cluster

    return redis_cluster(primaries=3, replicas=0)


def run_floor(params: dict[str, Any]) -> dict[str, Any]:
    """The floor scenario needs no server: the driver measures its own sends."""
    spec = {"host": "127.0.0.1", "port": 0, "pids": [], "heartbeat": params["heartbeat"],
            "scenarios": ["floor"], "params": params}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, str(BENCH / "drive.py"), json.dumps(spec)],
        stdout=subprocess.PIPE, timeout=params["driver_timeout"], check=False,
    )  # fmt: skip
    lines = proc.stdout.decode().strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"driver exited with {proc.returncode}")
    result: dict[str, Any] = json.loads(lines[-1])
    result.pop("_client", None)
    return result


def run_driver(
    spec: ServerSpec, running: Running, scenarios: list[str], params: dict[str, Any]
) -> dict[str, Any]:
    drive_spec = {
        "host": "127.0.0.1",
        "port": running.port,
        "pids": [running.pid],
        "redis": running.redis,
        "upstream_pids": [running.upstream["pid"]] if running.upstream else [],
        "kind": spec.kind,
        "server": spec.name,
        "stream_path": "/stream?channel=bench",
        "heartbeat": params["heartbeat"],
        "workers": spec.workers,
        "silent_until_event": spec.silent_until_event,
        "scenarios": scenarios,
        "params": params,
    }
    proc = subprocess.run(
        [sys.executable, str(BENCH / "drive.py"), json.dumps(drive_spec)],
        stdout=subprocess.PIPE,
        timeout=params["driver_timeout"],
        check=False,
    )
    lines = proc.stdout.decode().strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"driver exited with {proc.returncode}")
    result: dict[str, Any] = json.loads(lines[-1])
    result.pop("_client", None)
    return result


# --------------------------------------------------------------------------- aggregation

# (scenario key prefix, metric, label, higher_is_better)
METRICS: list[tuple[str, str, str, bool]] = [
    ("idle", "streams", "streams held", True),
    ("idle", "streams_per_worker", "streams/worker", True),
    ("idle", "rss_per_stream_kb", "RSS/stream KiB", False),
    ("idle", "idle_cpu_pct", "idle CPU %", False),
    ("idle", "ready_s", "open+ready s", False),
    ("fanout", "subscribers", "subscribers", True),
    ("fanout", "cpu_us_per_delivery", "CPU us/delivery", False),
    ("fanout", "deliveries_per_s", "deliveries/s", True),
    ("fanout", "p50_ms", "p50 ms", False),
    ("fanout", "p99_ms", "p99 ms", False),
    ("fanout", "lost", "lost", False),
    ("chat", "completed", "completed", True),
    ("chat", "p50_ms", "p50 added ms", False),
    ("chat", "p99_ms", "p99 added ms", False),
    ("chat", "max_ms", "max added ms", False),
    ("chat", "cpu_us_per_token", "CPU us/token", False),
    ("floor", "sockets", "sockets", True),
    ("floor", "cpu_us_per_send", "CPU us/send", False),
    ("isolated", "subscribers", "subscribers", True),
    ("isolated", "cpu_us_per_delivery", "CPU us/delivery", False),
    ("isolated", "floor_us_per_send", "floor us/send", False),
    ("isolated", "x_floor", "x floor", False),
    ("isolated", "p50_ms", "p50 ms", False),
    ("isolated", "p99_ms", "p99 ms", False),
    ("isolated", "lost", "lost", False),
    ("churn", "streams_per_s", "new streams/s", True),
    ("churn", "ttfb_p99_ms", "first byte p99 ms", False),
    ("churn", "notice_half_s", "notice 50% s", False),
    ("churn", "notice_all_s", "notice 100% s", False),
    ("redis", "cpu_us_per_delivery", "app CPU us/delivery", False),
    ("redis", "redis_cpu_us_per_delivery", "redis CPU us/delivery", False),
    ("redis", "total_cpu_us_per_delivery", "total CPU us/delivery", False),
    ("redis", "overhead_us_per_delivery", "overhead vs ours-mem us", False),
    ("redis", "redis_clients", "redis connections", False),
    ("relay", "tokens", "tokens delivered", True),
    ("relay", "lost", "lost", False),
    ("relay", "cpu_us_per_token", "CPU us/token", False),
    ("relay", "p50_ms", "p50 added ms", False),
    ("relay", "p99_ms", "p99 added ms", False),
    ("relay", "server_cpu_pct", "server CPU %", False),
    ("relay", "upstream_cpu_pct", "upstream CPU %", False),
    ("relay", "upstream_late_p99_ms", "upstream late p99 ms", False),
    ("relay", "fell_behind", "fell behind", False),
    ("storm", "streams", "streams", True),
    ("storm", "resumed", "resumed", True),
    ("storm", "all_resumed_s", "cut->all resumed s", False),
    ("storm", "storm_s", "first->last resume s", False),
    ("storm", "resumes_per_s", "resumes/s", True),
    ("storm", "cpu_us_per_resume", "CPU us/resume", False),
    ("storm", "gaps", "gaps+dups", False),
    ("presence", "streams", "streams", True),
    ("presence", "open_cpu_us_per_stream", "open CPU us/stream", False),
    ("presence", "idle_cpu_pct", "idle CPU %", False),
    ("presence", "idle_cpu_vs_off", "idle CPU / off", False),
    ("presence", "open_cpu_vs_off", "open CPU / off", False),
    ("presence", "presence_events_per_stream", "presence events/stream", False),
    ("presence", "streams", "streams", True),
    ("presence", "idle_commands_per_s", "Redis cmds/s idle", False),
    ("presence", "churn_commands_per_s", "Redis cmds/s churn", False),
    ("presence", "idle_redis_cpu_pct", "redis CPU % idle", False),
]
HEADLINE: dict[str, list[str]] = {
    "idle": ["rss_per_stream_kb", "streams_per_worker"],
    "fanout": ["cpu_us_per_delivery", "deliveries_per_s", "p99_ms"],
    "chat": ["cpu_us_per_token", "p50_ms", "p99_ms"],
    "isolated": ["cpu_us_per_delivery", "p99_ms"],
    "churn": ["streams_per_s", "notice_all_s"],
    "redis": ["total_cpu_us_per_delivery"],
    "relay": ["cpu_us_per_token", "p99_ms"],
    "storm": ["resumes_per_s", "cpu_us_per_resume"],
}


def metric_defs(key: str) -> list[tuple[str, str, bool]]:
    prefix = key.split("_", 1)[0]
    return [(m, label, hib) for p, m, label, hib in METRICS if p == prefix]


def derive_redis(raw: dict[str, dict[str, list[dict[str, Any]]]]) -> None:
    """The Redis scenario reuses the fan-out runs: cost of a delivery through Redis."""
    for server, by_key in raw.items():
        if server not in SERVER_SPECS:
            continue
        if not (SERVER_SPECS[server].redis or server == "ours-mem"):
            continue
        for key in [k for k in by_key if k.startswith("fanout_")]:
            subs = key.split("_", 1)[1]
            out = []
            for rep, res in enumerate(by_key[key]):
                if not res.get("ok") or res.get("cpu_us_per_delivery") is None:
                    out.append({"ok": False, "error": res.get("error", "fan-out failed")})
                    continue
                app = res["cpu_us_per_delivery"]
                rcpu = res.get("redis_cpu_us_per_delivery") or 0.0
                entry = {
                    "ok": True,
                    "cpu_us_per_delivery": app,
                    "redis_cpu_us_per_delivery": res.get("redis_cpu_us_per_delivery"),
                    "total_cpu_us_per_delivery": round(app + rcpu, 3),
                    "redis_clients": res.get("redis_clients"),
                }
                mem = raw.get("ours-mem", {}).get(key, []) if SERVER_SPECS[server].ours else []
                base = mem[rep] if server != "ours-mem" and rep < len(mem) else {}
                if base.get("ok") and base.get("cpu_us_per_delivery"):
                    entry["overhead_us_per_delivery"] = round(
                        app + rcpu - base["cpu_us_per_delivery"], 3
                    )
                out.append(entry)
            by_key[f"redis_{subs}"] = out


def derive_presence(raw: dict[str, dict[str, list[dict[str, Any]]]]) -> None:
    """Each "on" server's presence_idle CPU divided by its "off" twin's, per repeat."""
    for broker in ("mem", "redis"):
        on = raw.get(f"presence-{broker}-on", {}).get("presence_idle", [])
        off = raw.get(f"presence-{broker}-off", {}).get("presence_idle", [])
        for a, b in zip(on, off, strict=False):
            for metric, key in (("idle_cpu_pct", "idle_cpu_vs_off"),
                                ("open_cpu_s", "open_cpu_vs_off")):
                if a.get(metric) and b.get(metric):
                    a[key] = round(a[metric] / b[metric], 3)


def median_of(results: list[dict[str, Any]], metric: str) -> float | None:
    vals = [r[metric] for r in results if r.get("ok") and isinstance(r.get(metric), int | float)]
    return statistics.median(vals) if vals else None


def ratios(
    raw: dict[str, dict[str, list[dict[str, Any]]]], key: str, metric: str, peer: str
) -> dict[str, float | None]:
    """Per server: median over repeats of (value / peer value in the same repeat)."""
    out: dict[str, float | None] = {}
    peer_runs = raw.get(peer, {}).get(key, [])
    for server, by_key in raw.items():
        vals = []
        for rep, res in enumerate(by_key.get(key, [])):
            if rep >= len(peer_runs):
                continue
            a, b = res.get(metric), peer_runs[rep].get(metric)
            if res.get("ok") and peer_runs[rep].get("ok") and a is not None and b:
                vals.append(a / b)
        out[server] = statistics.median(vals) if vals else None
    return out


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def show(value: Any, metric: str, runs: list[dict[str, Any]]) -> str:
    """A table cell; a disconnect never noticed within the timeout shows as "> T"."""
    if value is None and metric.startswith("notice_"):
        timeouts = [r["notice_timeout_s"] for r in runs if r.get("notice_timeout_s")]
        if timeouts:
            return f"> {max(timeouts):g}"
    return fmt(value)


def summarize(
    raw: dict[str, dict[str, list[dict[str, Any]]]],
) -> tuple[dict[str, Any], list[str]]:
    keys: list[str] = []
    for by_key in raw.values():
        for key in by_key:
            if key not in keys:
                keys.append(key)
    order = {p: i for i, p in enumerate(SCENARIOS)}
    keys.sort(key=lambda k: (order.get(k.split("_", 1)[0], 99), len(k), k))
    summary: dict[str, Any] = {}
    lines: list[str] = []
    for key in keys:
        defs = metric_defs(key)
        servers = [s for s in raw if key in raw[s]]
        prefix = key.split("_", 1)[0]
        heads = [m for m in HEADLINE.get(prefix, []) if any(m == d[0] for d in defs)]
        summary[key] = {}
        header = ["server", *[f"{label} {'↑' if hib else '↓'}" for _, label, hib in defs]]
        ratio_cols: list[tuple[str, str]] = []
        for peer in PEERS_BY_PREFIX.get(prefix, PEERS):
            if peer in raw and key in raw[peer]:
                ratio_cols += [(m, peer) for m in heads]
        label_of = {m: label for m, label, _ in defs}
        header += [f"{label_of[m]} ÷ {peer}" for m, peer in ratio_cols]
        ratio_tables = {(m, p): ratios(raw, key, m, p) for m, p in ratio_cols}
        lines += [f"### {key}", "", "| " + " | ".join(header) + " |"]
        lines.append("|" + "---|" * len(header))
        for server in servers:
            runs = raw[server][key]
            ok = sum(1 for r in runs if r.get("ok"))
            row = {m: median_of(runs, m) for m, _, _ in defs}
            row["ok_runs"] = ok
            row["runs"] = len(runs)
            for m, p in ratio_cols:
                row[f"{m}/{p}"] = ratio_tables[(m, p)][server]
            summary[key][server] = row
            name = server if ok == len(runs) else f"{server} ({ok}/{len(runs)} ok)"
            if ok == 0:
                err = next((r.get("error") for r in runs if r.get("error")), "failed")
                name = f"{server} (FAILED: {str(err)[:60]})"
            cells = [name, *[show(row[m], m, runs) for m, _, _ in defs]]
            cells += [
                "-" if row[f"{m}/{p}"] is None else f"{row[f'{m}/{p}']:.2f}x" for m, p in ratio_cols
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return summary, lines


# --------------------------------------------------------------------------- plot


def plot(
    summary: dict[str, Any], path: Path, raw_runs: dict[str, dict[str, list[dict[str, Any]]]]
) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
        return False

    def pick(prefix: str) -> str | None:
        keys = [k for k in summary if k.split("_", 1)[0] == prefix]
        return max(keys, key=lambda k: int(k.split("_")[1]) if "_" in k else 0, default=None)

    panels: list[tuple[str, str, str]] = []
    for prefix, metric, title in [
        ("idle", "rss_per_stream_kb", "idle: RSS per stream (KiB) ↓"),
        ("fanout", "cpu_us_per_delivery", "fan-out {n}: server CPU µs/delivery ↓"),
        ("fanout", "p99_ms", "fan-out {n}: p99 publish→receive ms ↓"),
        ("chat", "p99_ms", "chat {n}: p99 added latency ms ↓"),
        ("churn", "streams_per_s", "churn: new streams/s ↑"),
        ("churn", "notice_all_s", "disconnect noticed (all) s ↓"),
    ]:
        key = pick(prefix)
        if key is not None:
            n = key.split("_", 1)[1] if "_" in key else ""
            panels.append((key, metric, title.format(n=n)))
    if not panels:
        return False
    cols = 3
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    for ax, (key, metric, title) in zip(axes.flat, panels, strict=False):
        servers = list(summary[key])
        vals = [summary[key][s].get(metric) for s in servers]
        heights = [v if v is not None else 0 for v in vals]
        colors = [
            "#d62728" if s.startswith("ours") else "#7f7f7f" if s == "bare-gevent" else "#1f77b4"
            for s in servers
        ]
        bars = ax.bar(range(len(servers)), heights, color=colors)
        for bar, v, server in zip(bars, vals, servers, strict=True):
            label = "n/a" if v is None else fmt(float(v))
            if v is None and metric.startswith("notice_"):
                label = (
                    "never (" + show(None, metric, raw_runs.get(server, {}).get(key, [])) + " s)"
                )
            ax.annotate(
                label,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
            )
        ax.set_xticks(range(len(servers)))
        ax.set_xticklabels(servers, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=9)
    fig.suptitle("flask-sse-stream vs peers (median of repeats, loopback, same machine)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------- main


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("flask", "gevent", "gunicorn", "sse-starlette", "starlette", "uvicorn",
                 "uvloop", "flask-sse", "redis", "flask-sse-stream"):  # fmt: skip
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "-"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out["redis-server"] = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run with tiny numbers")
    parser.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS),
                        help=f"from: {', '.join(SCENARIOS)}")  # fmt: skip
    parser.add_argument("--servers", default=None, help=f"from: {', '.join(SERVER_SPECS)}")
    parser.add_argument("--repeat", type=int, default=None, help="default 3 (quick: 1)")
    parser.add_argument(
        "--out", default=None, help="default bench/results (quick: bench/results/quick)"
    )
    parser.add_argument("--isolate", action="store_true", help="fresh server per scenario")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="override a parameter, e.g. --set idle_streams=20000")  # fmt: skip
    args = parser.parse_args(argv)

    params = dict(QUICK_PARAMS if args.quick else FULL_PARAMS)
    for item in args.set:
        k, _, v = item.partition("=")
        if k not in params:
            parser.error(f"unknown parameter {k}")
        params[k] = json.loads(v)
    repeat = args.repeat or (1 if args.quick else 3)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for s in scenarios:
        if s not in SCENARIOS:
            parser.error(f"unknown scenario {s}")
    if args.servers:
        names = [s.strip() for s in args.servers.split(",") if s.strip()]
    elif args.quick:
        names = [*QUICK_SERVERS, *(n for n in SERVER_SPECS if n not in QUICK_SERVERS
                                   and SERVER_SPECS[n].scenarios != LEGACY)]  # fmt: skip
    elif scenarios == ["redis"]:
        names = list(REDIS_SERVERS)
    else:
        names = list(SERVER_SPECS)
    if not args.servers:  # only the servers that serve one of the scenarios asked for,
        # and a checkout of other code only when it was named
        names = [n for n in names if any(SERVER_SPECS[n].serves(s) for s in scenarios)
                 and not SERVER_SPECS[n].code_from]
    for n in names:
        if n not in SERVER_SPECS:
            parser.error(f"unknown server {n}")
    out_dir = Path(args.out or BENCH / "results" / ("quick" if args.quick else ""))
    log_dir = out_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    nofile = raise_nofile_limit()

    driver_scenarios = [s for s in scenarios if s not in ("redis", "floor")]
    if "redis" in scenarios and "fanout" not in driver_scenarios:
        driver_scenarios.append("fanout")
    # one server start runs every scenario in turn (each scenario waits until the server
    # has let go of the previous one's streams); --isolate restarts it per scenario
    groups = [[s] for s in driver_scenarios] if args.isolate else [driver_scenarios]

    print(
        f"# bench: servers={','.join(names)} scenarios={','.join(scenarios)} "
        f"repeat={repeat} quick={args.quick} nofile={nofile}",
        flush=True,
    )
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {n: {} for n in names}
    if "floor" in scenarios:
        raw[FLOOR] = {}
    started = time.monotonic()
    load_start = os.getloadavg()
    for rep in range(repeat):
        if "floor" in scenarios:
            print(f"[{rep + 1}/{repeat}] floor", flush=True)
            try:
                floor = run_floor(params)
            except Exception as exc:
                err = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                floor = {f"floor_{subs}": dict(err) for subs, _ in params["isolated"]}
            for key, res in floor.items():
                raw[FLOOR].setdefault(key, []).append(res)
        for name in names:
            spec = SERVER_SPECS[name]
            for group in groups:
                todo = [
                    s
                    for s in group
                    if (s not in ("fanout", "isolated") or spec.broadcast_across_workers)
                    and spec.serves(s)
                ]
                if "redis" in scenarios and "fanout" not in scenarios and name not in REDIS_SERVERS:
                    todo = [s for s in todo if s != "fanout"]
                if not todo:
                    continue
                t0 = time.monotonic()
                print(f"[{rep + 1}/{repeat}] {name}: {','.join(todo)}", flush=True)
                try:
                    with serve(spec, params["heartbeat"], log_dir, params) as running:
                        result = run_driver(spec, running, todo, params)
                except Exception as exc:
                    err = f"{type(exc).__name__}: {exc}"
                    print(f"    FAILED: {err}", flush=True)
                    result = {s: {"ok": False, "error": err} for s in todo}
                    if "fanout" in result:  # keep the per-size keys the tables expect
                        fan = result.pop("fanout")
                        for subs, *_ in params["fanout"]:
                            result[f"fanout_{subs}"] = dict(fan)
                    for s in ("chat",):
                        if s in result:
                            res = result.pop(s)
                            for n in params["chat_streams"]:
                                result[f"chat_{n}"] = dict(res)
                    if "isolated" in result:
                        res = result.pop("isolated")
                        for subs, _ in params["isolated"]:
                            result[f"isolated_{subs}"] = dict(res)
                    if "relay" in result:
                        res = result.pop("relay")
                        for n in params["relay_streams"]:
                            result[f"relay_{n}"] = dict(res)
                for key, res in result.items():
                    raw[name].setdefault(key, []).append(res)
                print(f"    done in {time.monotonic() - t0:.1f}s", flush=True)
    if "presence" in scenarios:
        derive_presence(raw)
    if "redis" in scenarios:
        derive_redis(raw)
        if "fanout" not in scenarios:
            for by_key in raw.values():
                for key in [k for k in by_key if k.startswith("fanout_")]:
                    del by_key[key]
    elapsed = time.monotonic() - started
    load_end = os.getloadavg()

    summary, lines = summarize(raw)
    print()
    print(f"## Results ({repeat} repeat(s), medians; {elapsed:.0f} s; load average "
          f"{load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end)")  # fmt: skip
    print()
    print(
        "Ratios are value ÷ peer value measured in the same repeat (median over repeats); "
        "↑ higher is better, ↓ lower is better."
    )
    print()
    print("\n".join(lines))

    failures = [
        f"{server}/{key}"
        for server, by_key in raw.items()
        for key, runs in by_key.items()
        if any(not r.get("ok") for r in runs)
    ]
    report = {
        "meta": {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "quick": args.quick,
            "repeat": repeat,
            "servers": names,
            "scenarios": scenarios,
            "params": params,
            "elapsed_s": round(elapsed, 1),
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "nofile": nofile,
                "loadavg_start": load_start,
                "loadavg_end": load_end,
            },
            "versions": versions(),
            "notes": {n: SERVER_SPECS[n].note for n in names if SERVER_SPECS[n].note},
        },
        "summary": summary,
        "raw": raw,
        "failures": failures,
    }
    (out_dir / "latest.json").write_text(json.dumps(report, indent=1, default=str))
    png = out_dir / "bench.png"
    if plot(summary, png, raw):
        print(f"plot: {png}")
    print(f"json: {out_dir / 'latest.json'}")
    if failures:
        print(f"FAILED scenarios: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
