"""Stopping a process ends its streams, and our gunicorn worker class warns about setups
that break replies: in process (fast tier), with real gunicorn worker objects, no server."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from gunicorn.config import Config
from gunicorn.glogging import Logger

from flask_sse_stream import SSE
from flask_sse_stream.contrib import gunicorn as contrib
from flask_sse_stream.stream import shutdown

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


class InlineRuntime:
    """A cooperative runtime that runs what is spawned at once, in this thread."""

    cooperative = True

    def spawn(self, fn: Callable[[], Any], context: Any) -> None:
        fn()

    def sleep(self, seconds: float) -> None:
        return None


@pytest.fixture
def drains(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Per-process state reset, signal handlers restored, drains counted."""
    monkeypatch.setattr(shutdown, "_watched_pid", None)
    monkeypatch.setattr(shutdown, "_drained_pid", None)
    counted: list[int] = []

    def close_all() -> int:
        counted.append(os.getpid())
        return 0

    monkeypatch.setattr(shutdown, "close_all_streams", close_all)
    monkeypatch.setattr("flask_sse_stream.runtime.current", InlineRuntime)
    saved = {signum: signal.getsignal(signum) for signum in SIGNALS}
    try:
        yield counted
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def worker(workers: int = 1) -> contrib.GeventWorker:
    cfg = Config()
    cfg.set("workers", workers)
    return contrib.GeventWorker(0, os.getppid(), [], None, 30, cfg, Logger(cfg))


def test_a_threaded_server_keeps_its_signals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutdown, "_watched_pid", None)
    before = signal.getsignal(signal.SIGTERM)
    shutdown.watch_process()  # plain pytest: the threads runtime
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_signal_drains_then_runs_the_servers_handler(drains: list[int]) -> None:
    seen: list[int] = []
    signal.signal(signal.SIGTERM, lambda sig, frame: seen.append(sig))
    shutdown.watch_process()
    shutdown.watch_process()  # every stream calls it: the handlers are chained once
    os.kill(os.getpid(), signal.SIGTERM)
    assert drains == [os.getpid()] and seen == [signal.SIGTERM]
    os.kill(os.getpid(), signal.SIGTERM)
    assert drains == [os.getpid()] and seen == [signal.SIGTERM] * 2  # drained once


def test_a_stream_opened_while_stopping_is_ended_at_once(drains: list[int]) -> None:
    shutdown.watch_process()
    shutdown.drain()
    shutdown.watch_process()  # a kept-alive connection opens one more stream
    assert drains == [os.getpid()] * 2


def test_our_worker_drains_once_whatever_stopped_it(
    drains: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(contrib, "spawn", lambda fn: fn())
    w = worker()
    assert w.alive
    w.alive = False  # what max_requests, the reloader and handle_exit do
    assert drains == [os.getpid()]
    assert w.cfg.keepalive == 0  # the drained connections close instead of lingering
    w.alive = False
    assert drains == [os.getpid()]


def test_our_worker_warns_about_the_memory_broker_under_several_workers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = Flask(__name__)
    SSE(app)
    with caplog.at_level(logging.WARNING, logger="flask_sse_stream"):
        contrib._warn_about_app(app, worker(workers=1).cfg)
        assert caplog.records == []
        contrib._warn_about_app(app, worker(workers=3).cfg)
    [record] = caplog.records
    assert "memory://" in record.getMessage() and "3 workers" in record.getMessage()


def test_our_worker_warns_about_gunicorns_own_http2(caplog: pytest.LogCaptureFixture) -> None:
    cfg = worker().cfg
    cfg.set("http_protocols", "h2,h1")
    with caplog.at_level(logging.WARNING, logger="flask_sse_stream"):
        contrib.check_config(cfg)
    [record] = caplog.records
    assert "HTTP/2" in record.getMessage()
