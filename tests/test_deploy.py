"""The deployment defaults keep the README's promises: the run command (one worker on
``memory://``), plain gunicorn with no config drains on SIGTERM and on ``max_requests``,
``gevent.pywsgi`` drains too, and a loud warning where ``memory://`` meets several workers."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest

from tests.chat import demo_reply, partial_chat, run_chat
from tests.rawsse import RawResponse, open_stream
from tests.servers import (
    OUR_WORKER,
    ROOT,
    Server,
    free_port,
    gunicorn_server,
    stop_process,
    wait_for_port,
)
from tests.sse_parser import parse

pytestmark = pytest.mark.slow

WARNING = "SSE_BROKER_URL is memory:// but gunicorn runs 2 workers"


def run_command() -> list[str]:
    """The gunicorn command line ``scripts/run`` execs, with this venv's gunicorn."""
    lines = (ROOT / "scripts" / "run").read_text().splitlines()
    argv = shlex.split(next(line for line in lines if line.startswith("exec ")))[1:]
    assert argv[0] == ".venv/bin/gunicorn", argv
    return [sys.executable, "-m", "gunicorn", *argv[1:]]


@contextmanager
def run_command_server(env: dict[str, str]) -> Iterator[Server]:
    port = free_port()
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "BIND": f"127.0.0.1:{port}", **env}
    log = tempfile.NamedTemporaryFile(prefix="run-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(run_command(), cwd=ROOT, env=full_env, stdout=log,
                            stderr=subprocess.STDOUT)
    server = Server(proc, port, Path(log.name), env)
    try:
        wait_for_port(port, proc)
        yield server
    finally:
        stop_process(proc)
        log.close()


def first_event(resp: RawResponse) -> tuple[bytes, str]:
    body = b""
    while not parse(body).events:
        chunk = resp.read_chunk()
        assert chunk, f"stream ended before an event: {body!r}"
        body += chunk
    return body, parse(body).events[0].last_event_id


def test_run_command_resumes_and_stops_on_new_connections() -> None:
    with run_command_server({"FLASK_CHAT_DEMO_DELAY": "0.03"}) as server:
        assert wait_for(lambda: "Using worker: flask_sse_stream.contrib.gunicorn.GeventWorker"
                        in server.log())
        assert wait_for(lambda: len(server.worker_pids()) == 1)

        def resume(i: int) -> bool:
            first = partial_chat(server, "GET", f"resume {i}", count=2)
            rest = run_chat(server, "GET", f"resume {i}",
                            headers={"Last-Event-ID": first.events[-1].last_event_id})
            return (rest.close["finish_reason"] == "stop"
                    and first.text + rest.text == demo_reply(f"resume {i}"))

        def stop(i: int) -> bool:
            with open_stream(server.url + f"/chat/stream?message=stop+{i}", timeout=30) as resp:
                body, last = first_event(resp)
                deleted = httpx.delete(f"{server.url}/chat/stream/{last.split(':')[0]}",
                                       timeout=30)
                body += resp.read_all()
            return (deleted.status_code == 204
                    and json.loads(parse(body).events[-1].data)["finish_reason"] == "cancelled")

        with ThreadPoolExecutor(25) as pool:
            resumed = list(pool.map(resume, range(50)))
            stopped = list(pool.map(stop, range(50)))
        assert resumed.count(True) == 50, resumed
        assert stopped.count(True) == 50, stopped
        assert WARNING not in server.log()


def test_memory_broker_under_several_workers_warns_loudly() -> None:
    with gunicorn_server("tests.apps.core_app:create_app()", workers=2, config=None,
                         worker_class=OUR_WORKER) as server:
        assert wait_for(lambda: server.log().count(WARNING) == 2)  # once per worker process
        log = server.log()
        assert "-w 1" in log and "redis://" in log  # it names the fix
    with gunicorn_server("tests.apps.core_app:create_app()", workers=1, config=None,
                         worker_class=OUR_WORKER) as server:
        httpx.get(server.url + "/count?n=1", timeout=10)
        assert "memory://" not in server.log()


def test_example_config_runs_several_workers_only_with_a_shared_broker(redis: Server) -> None:
    env = {"FLASK_SSE_BROKER_URL": f"redis://127.0.0.1:{redis.port}/0", "WEB_CONCURRENCY": "2"}
    with run_command_server(env) as server:
        assert wait_for(lambda: len(server.worker_pids()) == 2)
        assert "memory://" not in server.log()


def wait_for(predicate, timeout: float = 20.0) -> bool:
    """Poll what has no event to await (a log file, a process table)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def open_many(server: Server, count: int) -> list[RawResponse]:
    def one(i: int) -> RawResponse:
        path = f"/blocked?name=d{i}" if i % 2 else "/stream?channel=drain"
        resp = open_stream(server.url + path, timeout=30)
        assert resp.status == 200
        resp.read_chunk()  # the opening line: the stream is registered
        return resp

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(one, range(count)))


def assert_all_end_with_retry(streams: list[RawResponse]) -> None:
    for resp in streams:
        with resp:
            tail = resp.read_all()
            assert tail.rstrip(b"\n").rsplit(b"\n", 1)[-1].startswith(b"retry: "), tail


def test_plain_gunicorn_without_config_drains_on_sigterm() -> None:
    with gunicorn_server("tests.apps.core_app:create_app()", config=None,
                         env={"TEST_HEARTBEAT": "30"}) as server:
        streams = open_many(server, 500)
        assert httpx.get(server.url + "/stats", timeout=10).json()["open_streams"] == 500
        [worker] = server.worker_pids()
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        psutil.Process(worker).wait(30)  # the streams' bytes wait in the kernel meanwhile
        worker_seconds = time.monotonic() - started
        assert_all_end_with_retry(streams)
        server.proc.wait(15)
        elapsed = time.monotonic() - started
        print(f"\nplain gunicorn, 500 streams, SIGTERM: worker exited after {worker_seconds:.2f}s")
        assert worker_seconds < 10  # graceful_timeout is 30 s: the drain ended the streams
        print(f"plain gunicorn, 500 streams, SIGTERM: gunicorn exited after {elapsed:.2f}s")
        assert "graceful timeout" not in server.log().lower()


def test_our_worker_class_drains_when_max_requests_retires_the_worker() -> None:
    """max_requests stops a worker without a signal: our worker class drains then too
    (plain ``-k gevent`` drains on signals only)."""
    with gunicorn_server("tests.apps.core_app:create_app()", config=None, worker_class=OUR_WORKER,
                         args=("--max-requests", "41"), env={"TEST_HEARTBEAT": "30"}) as server:
        assert wait_for(lambda: len(server.worker_pids()) == 1)
        [old] = server.worker_pids()
        streams = open_many(server, 40)
        started = time.monotonic()
        httpx.get(server.url + "/count?n=1", timeout=10)  # the 41st request
        assert_all_end_with_retry(streams)
        assert wait_for(lambda: not psutil.pid_exists(old) or
                        psutil.Process(old).status() == psutil.STATUS_ZOMBIE, 15)
        elapsed = time.monotonic() - started
        print(f"\nmax_requests with 40 streams: old worker gone after {elapsed:.2f}s")
        assert elapsed < 10
        assert wait_for(lambda: len(server.worker_pids()) == 1 and server.worker_pids() != [old])


def test_pywsgi_drains_on_sigterm() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.apps.pywsgi_main", str(port)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "TEST_HEARTBEAT": "30"})
    try:
        wait_for_port(port, proc)
        server = Server(proc, port, Path(os.devnull))
        streams = open_many(server, 20)
        proc.send_signal(signal.SIGTERM)
        assert_all_end_with_retry(streams)
        assert proc.wait(10) == -signal.SIGTERM  # then the signal did what it did before
    finally:
        stop_process(proc)


def test_gunicorn_http2_warns_and_serves_one_stream_per_connection() -> None:
    args = ("--http-protocols", "h2,h1", "--http2-cleartext", "prior-knowledge")
    with gunicorn_server("tests.apps.core_app:create_app()", config=None, args=args,
                         worker_class=OUR_WORKER,
                         env={"TEST_HEARTBEAT": "30"}) as server:
        assert wait_for(lambda: "gunicorn's own HTTP/2 is on" in server.log())
        # What the warning is about: a second request on the connection of an open stream
        # is not answered while the stream lasts (measured: never within 3 s).
        with (httpx.Client(http1=False, http2=True, base_url=server.url, timeout=10) as client,
              client.stream("GET", "/blocked?name=h2") as stream):
            assert stream.http_version == "HTTP/2"
            next(stream.iter_raw())
            with pytest.raises(httpx.ReadTimeout):
                client.get("/count?n=1", timeout=3)
        with httpx.Client(http1=False, http2=True, base_url=server.url, timeout=10) as client:
            assert client.get("/count?n=1").status_code == 200  # alone it is served
