"""A rolling deploy with Redis: SIGTERM one server while clients listen; they resume on
the other from Last-Event-ID and lose nothing."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.channels import Subscriber, publish
from tests.servers import Server, gunicorn_server

pytestmark = pytest.mark.slow

CLIENTS = int(os.environ.get("DEPLOY_CLIENTS", "100"))  # 500 for the reliability table
TOTAL = 150


def listen(old: Server, new: Server, ready: threading.Barrier) -> list[int]:
    """One client: listen on ``old``; when it ends the stream, resume on ``new``."""
    seen: list[int] = []
    sub = Subscriber(old, "deploy")
    ready.wait()
    first = sub.read_to_end()  # ends when the old server shuts down
    assert first.rstrip(b"\n").rsplit(b"\n", 1)[-1].startswith(b"retry: ")
    events = sub.events(0)
    seen += [json.loads(e.data)["n"] for e in events]
    last_id = events[-1].last_event_id if events else None
    sub.close()
    with Subscriber(new, "deploy", last_event_id=last_id) as again:
        seen += [json.loads(e.data)["n"] for e in again.events(TOTAL - len(seen))]
    if seen != list(range(TOTAL)):
        print("FIRST", first[-400:], "\nSECOND", again.body[:600])
    return seen


def test_sigterm_during_a_broadcast_loses_nothing(redis: Server) -> None:
    env = {"TEST_BROKER_URL": f"redis://127.0.0.1:{redis.port}/2", "TEST_HEARTBEAT": "5"}
    with gunicorn_server("tests.apps.core_app:create_app()", env=env) as new, \
            gunicorn_server("tests.apps.core_app:create_app()", env=env) as old:
        ready = threading.Barrier(CLIENTS + 1)
        with ThreadPoolExecutor(CLIENTS) as pool:  # one thread per client: blocking sockets
            futures = [pool.submit(listen, old, new, ready) for _ in range(CLIENTS)]
            ready.wait(timeout=30)
            for n in range(50):
                publish(new, {"n": n}, "deploy")
            started = time.monotonic()
            old.proc.send_signal(signal.SIGTERM)
            exit_times: list[float] = []

            def wait_for_exit() -> None:
                old.proc.wait(15)
                exit_times.append(time.monotonic() - started)

            waiter = threading.Thread(target=wait_for_exit)
            waiter.start()
            for n in range(50, 100):  # published while the clients move over
                publish(new, {"n": n}, "deploy")
            waiter.join(20)
            exit_seconds = exit_times[0]
            for n in range(100, TOTAL):
                publish(new, {"n": n}, "deploy")
            results = [f.result(timeout=60) for f in futures]
    print(f"\n{CLIENTS} streams, SIGTERM: old server exited in {exit_seconds:.2f}s")
    for seen in results:
        assert seen == list(range(TOTAL))  # every event once, in order, across the move
    assert exit_seconds < 5
