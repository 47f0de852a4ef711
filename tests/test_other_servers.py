"""The same streams on gevent.pywsgi and on the werkzeug dev server (`flask run`)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from httpx_sse import connect_sse

from tests.rawsse import open_stream
from tests.servers import ROOT, Server, free_port, stop_process, wait_for_port

pytestmark = pytest.mark.slow


@contextmanager
def serve(kind: str) -> Iterator[Server]:
    port = free_port()
    if kind == "pywsgi":
        cmd = [sys.executable, "-m", "tests.apps.pywsgi_main", str(port)]
    else:
        cmd = [sys.executable, "-m", "flask", "--app", "tests.apps.core_app:create_app()",
               "run", "--with-threads", "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TEST_HEARTBEAT": "0.3"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
        yield Server(proc, port, ROOT / "nonexistent.log")
    finally:
        stop_process(proc)


@pytest.fixture(scope="module", params=["pywsgi", "werkzeug"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    with serve(request.param) as srv:
        yield srv


def test_events_and_context(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        with connect_sse(client, "GET", "/count?n=3") as source:
            assert [e.id for e in source.iter_sse()] == ["0", "1", "2"]
        with connect_sse(client, "GET", "/context", headers={"X-User": "bo"}) as source:
            assert '"user":"bo"' in next(iter(source.iter_sse())).data


def test_heartbeats_while_blocked(server: Server) -> None:
    with open_stream(server.url + "/slow-first?wait=1.5") as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        body = resp.read_until(b"data: late\n\n")
    assert body.startswith(b": ok\n") and body.count(b": ping\n") >= 2


def test_disconnect_closes_the_generator(server: Server) -> None:
    with open_stream(server.url + "/stream?channel=closed") as watch:
        watch.read_chunk()
        name = f"gone-{server.port}"
        # pywsgi watches the socket (immediate); threads notice at the next write
        path = "/blocked" if "pywsgi" in str(server.proc.args) else "/ticking"
        resp = open_stream(server.url + f"{path}?name={name}")
        resp.read_until(b"\n\n")
        resp.close()
        assert name.encode() in watch.read_until(name.encode())


def test_channels(server: Server) -> None:
    with open_stream(server.url + "/stream?channel=other") as sub:
        sub.read_chunk()
        httpx.post(server.url + "/publish", json={"data": {"x": 1}, "channel": "other"})
        assert b'data: {"x":1}' in sub.read_until(b'{"x":1}')
