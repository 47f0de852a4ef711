"""Issue #11, core parts, on real servers: slow clients are cut, the stream cap holds under
a burst of subscribes, HTTPS on the werkzeug dev server keeps idle streams up."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.channels import publish
from tests.rawsse import RawResponse, open_stream
from tests.servers import ROOT, Server, free_port, gunicorn_server, stop_process, wait_for_port

pytestmark = pytest.mark.slow


def stats(server: Server) -> dict[str, Any]:
    return httpx.get(server.url + "/stats", timeout=10).json()  # type: ignore[no-any-return]


def holds_connection(server: Server, client_port: int) -> bool:
    """Whether the worker still has a socket open to the client's port."""
    for pid in server.worker_pids():
        for conn in psutil.Process(pid).net_connections(kind="tcp"):
            if conn.raddr and conn.raddr.port == client_port:
                return True
    return False


def never_reading_subscriber(server: Server, channel: str) -> tuple[socket.socket, int]:
    """A client that sends the request, then never reads (a tiny receive buffer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(f"GET /stream?channel={channel} HTTP/1.1\r\nHost: x\r\n"
                 "Accept: text/event-stream\r\n\r\n".encode())
    port = sock.getsockname()[1]
    deadline = time.monotonic() + 10
    while stats(server)["subscribers"].get(channel) != 1:
        assert time.monotonic() < deadline, "never subscribed"
        time.sleep(0.02)
    return sock, port


def test_a_client_that_never_reads_is_cut_within_a_second_of_overflow() -> None:
    with gunicorn_server("tests.apps.core_app:create_app()",
                         env={"TEST_QUEUE": "16", "TEST_WRITE_TIMEOUT": "0"}) as server:
        sock, port = never_reading_subscriber(server, "flood")
        try:
            # One event per request: the writer runs in between, fills the socket
            # buffers and then blocks in sendall; the queue fills behind it; the next
            # delivery overflows it. Before the fix the writer stayed blocked (~35 s).
            cut_at = None
            for _ in range(400):
                publish(server, channel="flood", size=64 * 1024)
                if not stats(server)["subscribers"].get("flood"):
                    cut_at = time.monotonic()
                    break
            assert cut_at is not None, "the slow client was never unsubscribed"
            while holds_connection(server, port):
                assert time.monotonic() - cut_at < 1.0, "its socket is still open"
                time.sleep(0.02)
            assert stats(server)["open_streams"] == 0
        finally:
            sock.close()


def test_a_zero_window_peer_is_cut_by_the_write_timeout() -> None:
    with gunicorn_server("tests.apps.core_app:create_app()",
                         env={"TEST_QUEUE": "100000", "TEST_WRITE_TIMEOUT": "1"}) as server:
        sock, port = never_reading_subscriber(server, "stuck")
        try:
            # Enough to fill both socket buffers, far too little to overflow the queue:
            # the writer is stuck in one write with the peer's window at zero.
            publish(server, channel="stuck", size=256 * 1024, count=40)
            stuck_at = time.monotonic()
            assert stats(server)["subscribers"].get("stuck") == 1  # no overflow
            deadline = stuck_at + 10
            while stats(server)["subscribers"].get("stuck") or holds_connection(server, port):
                assert time.monotonic() < deadline, "the stuck writer was never cut"
                time.sleep(0.05)
            assert stats(server)["open_streams"] == 0
        finally:
            sock.close()


def test_the_cap_holds_under_160_simultaneous_subscribes() -> None:
    with gunicorn_server("tests.apps.core_app:create_app()",
                         env={"TEST_MAX_STREAMS": "40"}) as server:
        responses: list[RawResponse] = []
        lock = threading.Lock()
        start = threading.Barrier(160)

        def subscribe() -> None:
            start.wait()
            response = open_stream(server.url + "/stream?channel=burst", timeout=30)
            with lock:
                responses.append(response)

        threads = [threading.Thread(target=subscribe) for _ in range(160)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        try:
            assert len(responses) == 160
            assert all(r.status == 200 for r in responses)  # EventSource keeps trying
            held = [r for r in responses if "content-length" not in r.headers]
            refused = [r for r in responses if "content-length" in r.headers]
            assert len(held) == 40 and len(refused) == 120
            for r in refused:
                assert r.read_all().startswith(b"retry: ")
            now = stats(server)
            assert now["open_streams"] == 40 and now["subscribers"] == {"burst": 40}
        finally:
            for r in responses:
                r.close()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


@contextmanager
def werkzeug_https(cert: Path, key: Path) -> Iterator[Server]:
    port = free_port()
    cmd = [sys.executable, "-m", "flask", "--app", "tests.apps.core_app:create_app()",
           "run", "--with-threads", "--port", str(port), "--cert", str(cert),
           "--key", str(key)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TEST_HEARTBEAT": "0.2"}
    log = ROOT / f".werkzeug-https-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc)
        yield Server(proc, port, log)
    finally:
        stop_process(proc)


def test_https_on_the_werkzeug_dev_server_keeps_idle_streams(
    tls_files: tuple[Path, Path],
) -> None:
    cert, key = tls_files
    with werkzeug_https(cert, key) as server:
        try:
            base = f"https://127.0.0.1:{server.port}"
            context = ssl.create_default_context(cafile=str(cert))
            raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
            sock.sendall(b"GET /stream?channel=idle HTTP/1.1\r\nHost: x\r\n"
                         b"Accept: text/event-stream\r\n\r\n")
            received = b""
            while received.count(b": ping") < 5:  # each heartbeat also peeks at the peer
                data = sock.recv(4096)
                assert data, f"the idle stream was closed: {received!r}"
                received += data
            assert b" 200 " in received.split(b"\r\n", 1)[0]
            with httpx.Client(verify=context, timeout=10) as client:
                assert client.get(base + "/stats").json()["open_streams"] == 1
                sock.close()  # the peer leaves: noticed at a heartbeat
                deadline = time.monotonic() + 10
                while client.get(base + "/stats").json()["open_streams"]:
                    assert time.monotonic() < deadline, "the stream outlived its client"
                    time.sleep(0.1)
            assert "Traceback" not in server.log_path.read_text(errors="replace")
        finally:
            server.log_path.unlink(missing_ok=True)
