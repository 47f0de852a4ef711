"""Chat on Redis: cancelling costs at most one message, and a reply resumes across
processes whether they run threads (werkzeug dev server) or gevent (gunicorn)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import psutil
import pytest
import redis as redis_py

from tests.chat import demo_reply, partial_chat, run_chat
from tests.rawsse import open_stream
from tests.servers import ROOT, Server, free_port, gunicorn_server, stop_process, wait_for_port
from tests.sse_parser import parse

pytestmark = pytest.mark.slow


@contextmanager
def werkzeug_server(env: dict[str, str]) -> Iterator[Server]:
    port = free_port()
    cmd = [sys.executable, "-m", "flask", "--app", "example_app:create_app()", "run",
           "--with-threads", "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
        yield Server(proc, port, ROOT / "nonexistent.log")
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def servers(redis: Server) -> Iterator[tuple[Server, Server, redis_py.Redis]]:
    env = {"FLASK_SSE_BROKER_URL": f"redis://127.0.0.1:{redis.port}/4",
           "FLASK_CHAT_DEMO_DELAY": "0.05", "FLASK_CHAT_GRACE_SECONDS": "5"}
    with gunicorn_server(env=env) as gevent_app, werkzeug_server(env) as threads_app:
        yield gevent_app, threads_app, redis_py.Redis(port=redis.port)


def publishes(admin: redis_py.Redis) -> int:
    return int(admin.info("commandstats").get("cmdstat_publish", {}).get("calls", 0))


def test_delete_of_a_finished_reply_sends_nothing(servers) -> None:
    owner, other, admin = servers
    done = run_chat(owner, "POST", "finish first")
    assert done.close["finish_reason"] == "stop"
    before = publishes(admin)
    cpu_before = sum(psutil.Process(p).cpu_times().user for p in owner.worker_pids())
    for server in (owner, other, owner):  # on the owner and on another process
        assert httpx.delete(f"{server.url}/chat/stream/{done.stream_id}").status_code == 204
    time.sleep(1.0)  # measuring that nothing happens: there is no event to wait for
    cpu = sum(psutil.Process(p).cpu_times().user for p in owner.worker_pids()) - cpu_before
    after = publishes(admin)
    print(f"\nDELETE x3 of a finished reply: {after - before} PUBLISH, owner CPU {cpu:.2f}s/1s")
    assert after == before  # no message at all, and no loop
    assert httpx.delete(f"{other.url}/chat/stream/never-was").status_code == 404
    assert publishes(admin) == before


def test_delete_of_a_running_reply_elsewhere_is_one_message(servers) -> None:
    owner, other, admin = servers
    with open_stream(owner.url + "/chat/stream?message=stop+me+please") as resp:
        stream_id = resp.headers["x-stream-id"]
        body = b""
        while not parse(body).events:
            body += resp.read_chunk()
        before = publishes(admin)
        assert httpx.delete(f"{other.url}/chat/stream/{stream_id}").status_code == 204
        body += resp.read_all()
    events = parse(body).events
    assert json.loads(events[-1].data)["finish_reason"] == "cancelled"
    assert httpx.delete(f"{other.url}/chat/stream/{stream_id}").status_code == 204
    time.sleep(1.0)  # measuring that nothing more happens
    assert publishes(admin) - before == 1


@pytest.mark.parametrize("direction", ["gevent->threads", "threads->gevent"])
def test_resume_across_thread_and_gevent_servers(servers, direction: str) -> None:
    gevent_app, threads_app, _admin = servers
    first_server, second_server = ((gevent_app, threads_app) if direction == "gevent->threads"
                                   else (threads_app, gevent_app))
    prompt = f"resume {direction}"
    first = partial_chat(first_server, "GET", prompt, count=3)
    rest = run_chat(second_server, "GET", prompt,
                    headers={"Last-Event-ID": first.events[-1].last_event_id})
    assert rest.stream_id == first.stream_id
    assert rest.seqs() == list(range(4, 4 + len(rest.events)))
    assert first.text + rest.text == demo_reply(prompt)
    assert rest.close["finish_reason"] == "stop"
