"""Real servers for the tests: gunicorn (gevent workers) and redis-server on loopback.

Every helper is a context manager that starts a real process on a free port, waits until
it answers, and stops it (SIGTERM, then SIGKILL) on exit, so a failing test never leaves a
server behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
OUR_WORKER = "flask_sse_stream.contrib.gunicorn.GeventWorker"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)  # polling a port that has no event to await
    raise TimeoutError(f"nothing listening on {port} after {timeout}s")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
            proc.kill()
            proc.wait()


@dataclass
class Server:
    """A running server process and where to reach it."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_pids(self) -> list[int]:
        return [c.pid for c in psutil.Process(self.proc.pid).children()]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def gunicorn_server(
    app: str = "example_app:create_app()",
    *,
    env: dict[str, str] | None = None,
    workers: int = 1,
    config: str | None = "example_app/gunicorn.conf.py",
    args: tuple[str, ...] = (),
    port: int | None = None,
    worker_class: str | None = None,
) -> Iterator[Server]:
    """Run ``gunicorn`` with gevent workers on 127.0.0.1 for the duration of the block:
    with ``config`` its worker class (the example config names ours,
    ``flask_sse_stream.contrib.gunicorn.GeventWorker``), without one plain ``-k gevent``,
    unless ``worker_class`` says otherwise."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "gunicorn"]
    if config:
        cmd += ["-c", str(ROOT / config)]
    if worker_class is None and not config:
        worker_class = "gevent"
    if not config:
        # gunicorn >= 24 opens a control socket at one fixed path per user: servers
        # started at once would take it from each other (our config turns it off)
        args = ("--no-control-socket", *args)
    if worker_class is not None:
        cmd += ["-k", worker_class]
    cmd += ["-w", str(workers), "-b", f"127.0.0.1:{port}", *args, app]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    log = tempfile.NamedTemporaryFile(prefix="gunicorn-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(proc, port, Path(log.name), env or {})
    try:
        wait_for_port(port, proc)
        yield server
    finally:
        stop_process(proc)
        log.close()


@contextmanager
def redis_server(port: int | None = None) -> Iterator[Server]:
    """Run a throwaway ``redis-server`` (no persistence) on 127.0.0.1."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed (scripts/test installs it)")
    port = port or free_port()
    workdir = tempfile.mkdtemp(prefix="redis-")
    log_path = Path(workdir) / "redis.log"
    cmd = [
        exe,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        workdir,
        "--logfile",
        str(log_path),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    server = Server(proc, port, log_path)
    try:
        wait_for_port(port, proc)
        yield server
    finally:
        stop_process(proc)
