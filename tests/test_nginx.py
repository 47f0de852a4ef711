"""The README's deployment notes, measured: the example app behind Debian's nginx on
loopback, with nginx's defaults (response buffering on, HTTP/1.0 to the upstream) and gzip
on for ``text/event-stream``. Replies stream token by token (our ``X-Accel-Buffering: no``
turns buffering off per response); over HTTP/2 (TLS, a self-signed certificate) eight
browser tabs share one connection."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse
from playwright.sync_api import Browser

from tests.servers import Server, free_port, gunicorn_server, stop_process, wait_for_port
from tests.test_deploy import wait_for

pytestmark = pytest.mark.slow

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

CONFIG = """
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format conn '$connection $server_protocol "$request" $status';
    access_log {dir}/access.log conn;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    gzip on;
    gzip_types text/event-stream application/json;
    server {{
        listen 127.0.0.1:{port};
        listen 127.0.0.1:{tls_port} ssl http2;
        ssl_certificate {dir}/cert.pem;
        ssl_certificate_key {dir}/key.pem;
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
        }}
    }}
}}
"""


@dataclass
class Nginx:
    url: str
    tls_url: str
    dir: Path

    def access_log(self) -> list[str]:
        return (self.dir / "access.log").read_text().splitlines()


@contextmanager
def nginx_in_front_of(upstream: Server) -> Iterator[Nginx]:
    if not Path(NGINX).exists():
        pytest.skip("nginx is not installed (scripts/test installs it)")
    work = Path(tempfile.mkdtemp(prefix="nginx-"))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(work / "key.pem"),
                    "-out", str(work / "cert.pem")], check=True, capture_output=True)
    port, tls_port = free_port(), free_port()
    (work / "nginx.conf").write_text(CONFIG.format(dir=work, port=port, tls_port=tls_port,
                                                   upstream=upstream.port))
    proc = subprocess.Popen([NGINX, "-c", str(work / "nginx.conf"), "-p", str(work)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc)
        wait_for_port(tls_port, proc)
        yield Nginx(f"http://127.0.0.1:{port}", f"https://127.0.0.1:{tls_port}", work)
    finally:
        stop_process(proc)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def nginx() -> Iterator[Nginx]:
    env = {"FLASK_CHAT_DEMO_DELAY": "0.1", "FLASK_TICKER_INTERVAL": "0.5"}
    with gunicorn_server(env=env) as server, nginx_in_front_of(server) as proxy:
        yield proxy


def test_chat_streams_token_by_token_through_buffering_gzip_nginx(nginx: Nginx) -> None:
    with httpx.Client(base_url=nginx.url, timeout=30) as client, connect_sse(
        client, "GET", "/chat/stream?message=through+nginx",
        headers={"Accept-Encoding": "gzip"},
    ) as source:
        assert source.response.headers["content-encoding"] == "gzip"  # gzip was on
        events = source.iter_sse()
        first = next(events)
        assert first.event == "message" and json.loads(first.data)["content"]
        # The first piece is here while the reply (~7 s) is still being written: had nginx
        # buffered it, the generation would be over and the DELETE would not cancel it.
        stream_id = first.id.split(":")[0]
        assert client.delete(f"/chat/stream/{stream_id}").status_code == 204
        rest = list(events)
    assert json.loads(rest[-1].data)["finish_reason"] == "cancelled"
    assert len(rest) < 60


def test_eight_tabs_share_one_http2_connection(nginx: Nginx, chromium: Browser) -> None:
    context = chromium.new_context(ignore_https_errors=True)
    try:
        pages = [context.new_page() for _ in range(8)]
        for page in pages:
            page.goto(nginx.tls_url + "/healthz")
            page.evaluate("""() => { window.__ticks = 0;
                new EventSource("/stream?channel=ticker").addEventListener(
                    "tick", () => { window.__ticks += 1; }); }""")
        # Over HTTP/1.1 Chromium opens at most six connections per host: the seventh and
        # eighth stream would wait forever. Over HTTP/2 all eight receive ticks at once.
        for page in pages:
            page.wait_for_function("window.__ticks >= 2", timeout=15000)
        healthz = pages[0].evaluate("""async () => {
            const r = await fetch("/healthz"); return r.status; }""")
        assert healthz == 200  # a request beside eight open streams
    finally:
        context.close()
    # nginx logs a request when it ends: once the tabs are gone
    assert wait_for(lambda: len(ticker_lines(nginx)) == 8), nginx.access_log()
    lines = ticker_lines(nginx)
    connections = {line.split()[0] for line in lines}
    assert len(connections) == 1, lines  # one connection carried the eight streams
    assert all(re.search(r" HTTP/2\.0 ", line) for line in lines), lines


def ticker_lines(nginx: Nginx) -> list[str]:
    return [line for line in nginx.access_log() if "/stream?channel=ticker" in line]
