"""The shutdown hook and the startup checks of ``flask_sse_stream.gunicorn``, in process
(fast tier): a real gunicorn worker object, no server."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger
from gunicorn.workers.sync import SyncWorker

from flask_sse_stream import gunicorn as hooks
from flask_sse_stream.brokers.memory import MemoryBroker

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Per-process hook state reset, signal handlers restored, drains counted."""
    for name in ("_attached_pid", "_drained_pid", "_checked_pid"):
        monkeypatch.setattr(hooks, name, None)
    drains: list[int] = []

    def close_all() -> int:
        drains.append(os.getpid())
        return 0

    monkeypatch.setattr(hooks, "_close_all", close_all)
    monkeypatch.setattr(hooks, "_spawn", lambda fn: fn())  # at once, in this thread
    saved = {signum: signal.getsignal(signum) for signum in SIGNALS}
    try:
        yield drains
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def worker(workers: int = 1) -> SyncWorker:
    cfg = Config()
    cfg.set("workers", workers)
    return SyncWorker(0, os.getppid(), [], None, 30, cfg, Logger(cfg))


def test_outside_a_server_nothing_is_hooked_or_logged(
    fresh: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with caplog.at_level(logging.WARNING, logger="flask_sse_stream"):
        hooks.check_server(MemoryBroker())
        hooks.attach_to_server()
    assert signal.getsignal(signal.SIGTERM) is before
    assert caplog.records == []


def test_a_stopping_worker_drains_once_whatever_stopped_it(fresh: list[int]) -> None:
    w = worker()
    hooks.install_shutdown_handler(w)
    chained = signal.getsignal(signal.SIGTERM)
    hooks.install_shutdown_handler(w)  # the explicit hook and the first stream: idempotent
    hooks.attach_to_server()
    assert signal.getsignal(signal.SIGTERM) is chained
    assert w.alive
    w.alive = False  # what max_requests, the reloader and handle_exit do
    assert fresh == [os.getpid()]
    assert w.cfg.keepalive == 0  # the drained connections close instead of lingering
    w.alive = False
    assert fresh == [os.getpid()]


def test_a_signal_drains_then_runs_the_previous_handler(fresh: list[int]) -> None:
    seen: list[int] = []
    signal.signal(signal.SIGTERM, lambda sig, frame: seen.append(sig))
    hooks.install_shutdown_handler(worker())
    os.kill(os.getpid(), signal.SIGTERM)
    assert fresh == [os.getpid()] and seen == [signal.SIGTERM]


def test_memory_broker_under_several_workers_warns_once(
    fresh: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    w = worker(workers=3)
    signal.signal(signal.SIGTERM, w.handle_exit)  # as the worker's init_signals does
    with caplog.at_level(logging.WARNING, logger="flask_sse_stream"):
        hooks.check_server(MemoryBroker())
        hooks.check_server(MemoryBroker())  # a second app in the process
    [record] = caplog.records
    assert "memory://" in record.getMessage() and "3 workers" in record.getMessage()
