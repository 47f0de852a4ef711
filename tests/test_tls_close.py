"""A client that leaves cleanly over gunicorn's own TLS (``--certfile``/``--keyfile``) ends
its stream at once, like one leaving over plain TCP.

curl, Go and Node close a TLS connection with a ``close_notify`` alert and then a FIN.
The bytes of that alert are not the end of the TCP stream, so a watcher that only peeks
at the TCP bytes takes them for a pipelined request and stops watching; the stream's
generator, blocked (waiting for an upstream), then runs on until a heartbeat write fails.
Here heartbeats are a minute apart and the generator must be closed well before that.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse

from tests.servers import Server, gunicorn_server

pytestmark = pytest.mark.slow

HEARTBEAT = 60  # seconds: no write in the test's time reveals the gone client
NOTICE = 10.0  # seconds the generator gets to be closed; watching makes it immediate


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1 (and its key)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def tls_server(certificate: tuple[Path, Path]) -> Iterator[Server]:
    cert, key = certificate
    with gunicorn_server("tests.apps.core_app:create_app()",
                         env={"TEST_HEARTBEAT": str(HEARTBEAT)},
                         args=("--certfile", str(cert), "--keyfile", str(key))) as server:
        yield server


def blocked_stream(server: Server, context: ssl.SSLContext, name: str) -> ssl.SSLSocket:
    """``GET /blocked`` over TLS, read up to its first event (then its generator sleeps
    for an hour; its ``finally:`` publishes ``{"closed": name}`` on channel ``closed``)."""
    tls = context.wrap_socket(socket.create_connection(("127.0.0.1", server.port), timeout=10),
                              server_hostname="127.0.0.1")
    tls.sendall(f"GET /blocked?name={name} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Accept: text/event-stream\r\n\r\n".encode())
    received = b""
    while b"started" not in received:
        data = tls.recv(65536)
        assert data, f"the stream ended before its first event: {received!r}"
        received += data
    return tls


def send_close_notify(tls: ssl.SSLSocket) -> None:
    """What curl does: the ``close_notify`` alert, without waiting for the server's."""
    tls.settimeout(0.5)
    with contextlib.suppress(OSError):  # ssl.SSLError and TimeoutError are OSErrors
        tls.unwrap()  # sends close_notify, then waits for the server's own (none comes)


@pytest.mark.parametrize("close_notify", [True, False], ids=["close_notify+FIN", "FIN"])
def test_a_client_leaving_a_tls_stream_closes_its_generator_at_once(
        tls_server: Server, certificate: tuple[Path, Path], close_notify: bool) -> None:
    context = ssl.create_default_context(cafile=str(certificate[0]))
    name = uuid.uuid4().hex
    url = f"https://127.0.0.1:{tls_server.port}/stream?channel=closed"
    with httpx.Client(verify=context, timeout=httpx.Timeout(10, read=NOTICE)) as client, \
            connect_sse(client, "GET", url) as watcher:
        assert watcher.response.status_code == 200  # subscribed before the stream starts
        tls = blocked_stream(tls_server, context, name)
        try:
            if close_notify:
                send_close_notify(tls)
            tls.shutdown(socket.SHUT_WR)  # the FIN; the socket stays open for reading
            closed = []
            try:
                for event in watcher.iter_sse():
                    closed.append(json.loads(event.data).get("closed"))
                    if name in closed:
                        break
            except httpx.ReadTimeout:
                pass
            assert name in closed, (
                f"the generator of a client that left was not closed within {NOTICE}s")
        finally:
            tls.close()
