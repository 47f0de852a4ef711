"""End every open stream as soon as the process is asked to stop, on any gevent server.

A WSGI server's graceful shutdown waits for open responses to finish, and an SSE response
never finishes by itself: without this a deploy hangs for the graceful timeout and then
cuts the streams without the ``retry:`` hint that sends clients to the new workers.

The first stream of a process chains a drain to its SIGTERM, SIGINT and SIGQUIT handlers
(under gevent, whose greenlets run in the main thread; a threaded server keeps its
signals). A handler the server installed (gunicorn's workers) runs right after the drain
has started; the default action (``gevent.pywsgi`` run from a script) runs once the
streams had a moment to write their hint. Nothing here knows a particular server:
``contrib.gunicorn`` adds what gunicorn's worker class can do besides.
"""

from __future__ import annotations

import contextvars
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from .. import runtime
from .registry import close_all_streams, open_stream_count

__all__ = ["DRAIN_SECONDS", "drain", "watch_process"]

log = logging.getLogger("flask_sse_stream")

DRAIN_SECONDS = 5.0  # how long a default signal action waits for the streams' last hint
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
# Per process (a forked worker inherits its parent's module state, hence the pid).
_watched_pid: int | None = None
_drained_pid: int | None = None


def watch_process() -> None:
    """Called for every new stream: the first hooks the process's stop signals; one
    opened while the process is already stopping (a kept-alive connection) ends at once."""
    global _watched_pid
    pid = os.getpid()
    if _watched_pid == pid:
        if _drained_pid == pid:
            spawn(close_all_streams)
        return
    _watched_pid = pid
    if runtime.current().cooperative:
        for signum in _SIGNALS:
            if not _chain(signum):
                return


def drain() -> int:
    """End every open stream with a reconnect hint, once per process; how many ended."""
    global _drained_pid
    if _drained_pid == os.getpid():
        return 0
    _drained_pid = os.getpid()
    count = close_all_streams()
    log.info("shutting down: ended %d open stream(s) with a retry hint", count)
    return count


def spawn(fn: Callable[[], Any]) -> None:
    """Run ``fn`` apart from the caller (a signal handler must return at once)."""
    runtime.current().spawn(fn, contextvars.Context())


def _chain(signum: int) -> bool:
    previous = signal.getsignal(signum)
    server_handler = callable(previous) and previous is not signal.default_int_handler
    if signum == signal.SIGQUIT and not server_handler:
        return True  # SIGQUIT's default (a core dump) is not a shutdown to prepare for
    server_action: Callable[[int, Any], Any] = previous if server_handler else _ignore  # type: ignore[assignment]

    def handler(sig: int, frame: Any) -> None:
        if server_handler:
            spawn(drain)
            server_action(sig, frame)
        else:
            spawn(lambda: _drain_then_default(sig, previous))

    try:  # only the main OS thread may set handlers
        signal.signal(signum, handler)
    except ValueError:
        return False
    return True


def _ignore(sig: int, frame: Any) -> None:
    return None


def _drain_then_default(sig: int, previous: Any) -> None:
    drain()
    deadline = time.monotonic() + DRAIN_SECONDS
    sleep = runtime.current().sleep
    while open_stream_count() and time.monotonic() < deadline:
        sleep(0.02)  # the writers finish on their own; there is no event to await
    if previous is signal.default_int_handler:
        previous(sig, None)  # KeyboardInterrupt, as before
    elif previous in (signal.SIG_DFL, None):
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
