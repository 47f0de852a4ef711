"""Streams over their whole life on real gunicorn: caps, churn, leaks, shutdown."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psutil
import pytest

from tests.channels import Subscriber, publish
from tests.rawsse import open_stream
from tests.servers import Server, gunicorn_server

pytestmark = pytest.mark.slow


def stats(server: Server) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(server.url + "/stats", timeout=10).json()
    return body


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.05) -> bool:
    """Poll server-side state that has no event to await (counters)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def connect_and_drop(url_path: str, port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {url_path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(4096)
        # drop as soon as the stream is open (headers and opening comment)


def test_max_streams_answers_503_with_retry_after() -> None:
    with gunicorn_server("tests.apps.core_app:create_app()",
                         env={"TEST_MAX_STREAMS": "2"}) as server:
        a = open_stream(server.url + "/stream?channel=cap")
        b = open_stream(server.url + "/blocked?name=cap")
        try:
            for path in ("/stream?channel=cap", "/count?n=1"):
                refused = httpx.get(server.url + path)
                assert refused.status_code == 503
                assert int(refused.headers["retry-after"]) >= 1
                assert "too many" in refused.json()["error"]
        finally:
            a.close()
            b.close()
        assert wait_for(lambda: stats(server)["open_streams"] == 0)
        assert httpx.get(server.url + "/count?n=1").status_code == 200


def test_thousands_of_connect_drop_cycles_leak_nothing(core_server: Server) -> None:
    def cycles(n: int) -> None:
        paths = ["/blocked?name=churn", "/stream?channel=churn", "/slow-first?wait=60"]
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda i: connect_and_drop(paths[i % 3], core_server.port), range(n)))

    cycles(300)  # warm up allocator pools and caches
    assert wait_for(lambda: stats(core_server)["open_streams"] == 0)
    before = stats(core_server)
    count = int(os.environ.get("SOAK_CYCLES", "2000"))  # 10000 for the reliability table
    cycles(count)
    assert wait_for(lambda: stats(core_server)["open_streams"] == 0)
    after = stats(core_server)
    assert after["subscribers"].get("churn", 0) == 0
    assert after["greenlets"] <= before["greenlets"] + 5
    growth = after["rss"] - before["rss"]
    print(f"\n{count} cycles: RSS {before['rss'] / 2**20:.1f} -> {after['rss'] / 2**20:.1f} MiB, "
          f"greenlets {before['greenlets']} -> {after['greenlets']}")
    assert growth < 4 * 2**20


def test_sigterm_ends_every_stream_promptly_with_a_retry_hint() -> None:
    with gunicorn_server("tests.apps.core_app:create_app()",
                         env={"TEST_HEARTBEAT": "30"}) as server:
        subs = [Subscriber(server, "bye") for _ in range(40)]
        blocked = [open_stream(server.url + f"/blocked?name=bye-{i}") for i in range(10)]
        publish(server, {"n": 1}, "bye")
        for sub in subs:
            assert sub.data(1) == [{"n": 1}]
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        for sub in subs:
            body = sub.read_to_end()  # ends: no need to wait for graceful_timeout
            assert body.rstrip(b"\n").rsplit(b"\n", 1)[-1].startswith(b"retry: ")
        for resp in blocked:
            tail = resp.read_all()
            assert tail.endswith(b"\n") and b"retry: " in tail
            resp.close()
        server.proc.wait(15)
        elapsed = time.monotonic() - started
        print(f"\nSIGTERM with 50 open streams: gunicorn exited after {elapsed:.2f}s")
        assert elapsed < 5  # graceful_timeout is 10 s: the streams did not hold it up


def test_stream_lifetime_limit_hands_the_client_a_retry() -> None:
    env = {"FLASK_SSE_MAX_STREAM_SECONDS": "1", "FLASK_TICKER_INTERVAL": "0"}
    with gunicorn_server(env=env) as server:
        with open_stream(server.url + "/stream?channel=ticker") as resp:
            body = resp.read_all()  # ends by itself after about a second
        assert body.startswith(b"retry: 1000\n")  # the example app's SSE_RETRY_MS
        assert b": ping" not in body  # the deadline is not mistaken for a heartbeat
        assert body.rstrip(b"\n").rsplit(b"\n", 1)[-1].startswith(b"retry: ")
        health = json.loads(httpx.get(server.url + "/healthz").text)
        assert health["ok"]


def test_worker_pids_helper_sees_workers(core_server: Server) -> None:
    pids = core_server.worker_pids()
    assert pids and all(psutil.pid_exists(p) for p in pids)


def test_a_dropped_stream_is_freed_at_once_not_by_the_garbage_collector(
    core_server: Server,
) -> None:
    """A closed stream leaves no reference cycle: its objects go as soon as it ends. A
    cycle per stream (mailbox <-> response, a generator's frame and request context) would
    wait for a full collection, whose pause grows with every stream still open."""
    n = 150
    paths = ["/blocked?name=gc", "/stream?channel=gc", "/count?n=2"]
    assert httpx.post(core_server.url + "/garbage?arm=1", timeout=10).json()["armed"]
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: connect_and_drop(paths[i % 3], core_server.port), range(n)))
        assert wait_for(lambda: stats(core_server)["open_streams"] == 0)
    finally:
        left = httpx.post(core_server.url + "/garbage", timeout=30).json()
    # Anything of a stream: the library's objects, gevent's sockets and watchers, a view's
    # generator and frame, bound methods. (What is left is not per stream of ours, e.g.
    # werkzeug's router makes a self-referencing closure for every request it routes.)
    stream_kinds = ("flask_sse_stream.", "gevent.", "builtins.frame", "builtins.generator",
                    "builtins.method", "socket.")
    held = {k: v for k, v in left["kinds"].items() if k.startswith(stream_kinds)}
    assert held == {}, left
