"""The processes under test: one redis-server and several gunicorn servers, with the
faults the scheduler may inflict on them (signals, restarts, pauses)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)  # nothing to await: a port that is not open yet
    return False


class Redis:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.dir = workdir / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.dir),
             "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        if not wait_port(self.port):
            raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self, *, keep_data: bool) -> None:
        """Stop and start again; without ``keep_data`` every stream (history, chat logs)
        is gone, as after a failover to an empty replica."""
        self.stop()
        if not keep_data:
            for path in self.dir.iterdir():
                if path.name != "redis.log":
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
        self.start()

    def pause(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)

    def info_clients(self) -> int | None:
        try:
            import redis

            client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1,
                                 retry=None)
            try:
                return int(client.info("clients")["connected_clients"])
            finally:
                client.close()
        except Exception:
            return None


class Server:
    """``gunicorn -k gevent`` with several workers, started from the chaos app."""

    def __init__(self, name: str, workdir: Path, env: dict[str, str], workers: int) -> None:
        self.name = name
        self.port = free_port()
        self.env = env
        self.workers = workers
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "example_app/gunicorn.conf.py"),
               "-k", "gevent", "-w", str(self.workers), "-b", f"127.0.0.1:{self.port}",
               "--graceful-timeout", "10", "bench.chaos.app:create_app()"]
        env = {**os.environ, "PYTHONPATH": str(ROOT), **self.env}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log,
                                         stderr=subprocess.STDOUT)
        if not wait_port(self.port):
            raise RuntimeError(f"{self.name} did not start; see {self.log_path}")

    def worker_pids(self) -> list[int]:
        if self.proc is None or self.proc.poll() is not None:
            return []
        try:
            return [c.pid for c in psutil.Process(self.proc.pid).children()]
        except psutil.Error:
            return []

    def signal_worker(self, rng: Any, signum: int) -> int | None:
        pids = self.worker_pids()
        if not pids:
            return None
        pid = rng.choice(pids)
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return None
        return int(pid)

    def stop(self, timeout: float = 20.0) -> float:
        """SIGTERM the whole server; returns how long it took to exit."""
        started = time.monotonic()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                for child in psutil.Process(self.proc.pid).children(recursive=True):
                    child.kill()
                self.proc.kill()
                self.proc.wait()
        return time.monotonic() - started

    def sample(self) -> list[dict[str, Any]]:
        rows = []
        for pid in self.worker_pids():
            try:
                proc = psutil.Process(pid)
                rows.append({"server": self.name, "pid": pid, "rss": proc.memory_info().rss,
                             "fds": proc.num_fds()})
            except psutil.Error:
                continue
        return rows


def make_workdir(path: str | None) -> Path:
    return Path(path) if path else Path(tempfile.mkdtemp(prefix="chaos-"))
