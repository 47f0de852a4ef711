"""The README's quick start as a pip user meets it: a clean virtualenv with only
``pip install <checkout>``, the README's Python code pasted into ``app.py`` and served with
the README's command, outside the checkout. It streams, publishes and drains on SIGTERM."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.rawsse import open_stream
from tests.servers import ROOT, Server, free_port, stop_process, wait_for_port
from tests.sse_parser import parse

pytestmark = pytest.mark.slow


def quick_start() -> tuple[str, str, str]:
    """The install command, the Python code and the serve command of the README."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, re.S)
    bash = [code.strip() for lang, code in blocks if lang == "bash"]
    python = [code for lang, code in blocks if lang == "python"]
    install = next(line for line in bash if line.startswith("pip install"))
    serve = next(line for line in bash if line.startswith("gunicorn"))
    return install, python[0], serve


@pytest.fixture(scope="module")
def venv() -> Iterator[Path]:
    install, _, _ = quick_start()
    assert shlex.split(install)[:3] == ["pip", "install", "."], install
    work = Path(tempfile.mkdtemp(prefix="quickstart-"))
    checkout = work / "checkout"  # a copy: building in place would leave build/ behind
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, checkout / name)
    subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True)
    python = work / "venv" / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    str(checkout)], check=True, timeout=600)
    try:
        yield work / "venv"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_only_the_library_is_installed(venv: Path) -> None:
    [site] = list(venv.glob("lib/python*/site-packages"))
    assert (site / "flask_sse_stream" / "contrib" / "gunicorn" / "config.py").is_file()
    assert not (site / "example_app").exists()  # it would shadow a user's module
    assert (site / "packaging").is_dir()  # gunicorn's gevent worker needs it


def test_quick_start_streams_publishes_and_drains(venv: Path) -> None:
    _, code, serve = quick_start()
    project = Path(tempfile.mkdtemp(prefix="project-"))
    (project / "app.py").write_text(code)
    argv = shlex.split(serve)
    assert argv[0] == "gunicorn"
    port = free_port()
    log_path = project / "gunicorn.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(venv / "bin" / "gunicorn"), *argv[1:], "-b", f"127.0.0.1:{port}"],
            cwd=project, env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin"},
            stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, proc)
            server = Server(proc, port, log_path)
            countdown = open_stream(server.url + "/countdown", timeout=30)
            body = b""
            while len(parse(body).events) < 2:
                body += countdown.read_chunk()
            first, second = parse(body).events[:2]
            assert (json.loads(first.data), first.last_event_id) == ({"n": 10}, "10")
            assert json.loads(second.data) == {"n": 9}

            news = open_stream(server.url + "/stream?channel=news", timeout=30)
            news.read_chunk()  # subscribed
            published = httpx.post(server.url + "/notify", json={"text": "hello"}, timeout=10)
            assert published.status_code == 200 and published.json()["id"]
            news_body = news.read_until(b"\n\n")
            assert json.loads(parse(news_body).events[0].data) == {"text": "hello"}

            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            for resp in (countdown, news):
                with resp:
                    tail = resp.read_all()
                    assert tail.rstrip(b"\n").rsplit(b"\n", 1)[-1].startswith(b"retry: "), tail
            proc.wait(15)
            elapsed = time.monotonic() - started
            print(f"\nquick start: SIGTERM with 2 streams, gunicorn exited after {elapsed:.2f}s")
            assert elapsed < 9  # graceful_timeout (10 s) did not have to cut them
        finally:
            stop_process(proc)
            shutil.rmtree(project, ignore_errors=True)
