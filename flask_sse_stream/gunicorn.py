"""Server integration: end every open stream as soon as the process is asked to stop.

gunicorn's graceful shutdown waits for open responses to finish, and an SSE response never
finishes by itself, so without this a deploy hangs for ``graceful_timeout`` and then cuts
the streams without the ``retry:`` hint.

It is automatic: the first stream of a process calls :func:`attach_to_server`, which finds
the gunicorn worker serving it and chains a drain to its SIGTERM/SIGINT/SIGQUIT handlers and
to every other way the worker stops (``max_requests``, the reloader: each sets
``worker.alive = False``). Under ``gevent.pywsgi`` (``python -m example_app``) SIGTERM and
SIGINT end the streams first and then do what they did before. The explicit hook still
works (and makes the first stream find everything in place)::

    from flask_sse_stream.gunicorn import post_worker_init  # noqa: F401

or use the ready-made config, ``gunicorn -c python:flask_sse_stream.gunicorn_conf app:app``.

:func:`check_server` (called by ``SSE.init_app``) warns, once per process, about setups that
break the promises: the ``memory://`` broker under several gunicorn workers (a resume or a
DELETE lands on a worker that never saw the stream) and gunicorn's own HTTP/2.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import signal
import sys
import time
from typing import Any

__all__ = ["attach_to_server", "check_server", "install_shutdown_handler", "post_worker_init"]

log = logging.getLogger("flask_sse_stream")

_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
# Per process (a forked worker inherits the arbiter's module state, hence the pid).
_attached_pid: int | None = None
_drained_pid: int | None = None
_checked_pid: int | None = None
STANDALONE_DRAIN_SECONDS = 5.0  # how long pywsgi waits for the streams to write their hint


def install_shutdown_handler(worker: Any) -> None:
    """Chain a handler to the worker's SIGTERM/SIGINT/SIGQUIT handling that ends all open
    streams (each gets a last ``retry:`` line, so clients reconnect to another worker), and
    do the same whenever the worker stops for another reason (``max_requests``, reload).
    Idempotent: once per process, whether from the hook or from the first stream."""
    global _attached_pid
    if _attached_pid == os.getpid():
        return
    _attached_pid = os.getpid()
    for signum in _SIGNALS:
        previous = signal.getsignal(signum)

        def handler(sig: int, frame: Any, previous: Any = previous) -> None:
            _spawn(lambda: _drain(worker))
            if callable(previous):
                previous(sig, frame)

        if not _set_handler(signum, handler):
            break  # not the main thread (gthread worker): the alive hook below still drains
    _drain_when_stopping(worker)


def _set_handler(signum: int, handler: Any) -> bool:
    # Only the main OS thread may set handlers; under gevent every greenlet looks like a
    # thread of its own to the patched ``threading``, so ask ``signal`` itself.
    try:
        signal.signal(signum, handler)
    except ValueError:
        return False
    return True


def post_worker_init(worker: Any) -> None:
    """A ready-made gunicorn ``post_worker_init`` hook."""
    install_shutdown_handler(worker)


def attach_to_server() -> None:
    """Hook the shutdown of the server this process runs, once per process (the registry
    calls it for every new stream; after the first it is one comparison)."""
    global _attached_pid
    if _attached_pid == os.getpid():
        if _drained_pid == _attached_pid:  # opened on a kept-alive connection while stopping
            _spawn(_close_all)
        return
    worker = _gunicorn_owner(worker_only=True)
    if worker is not None:
        install_shutdown_handler(worker)
        return
    _attached_pid = os.getpid()
    if "gevent" in sys.modules and _gevent_patched():
        _install_standalone()  # a threaded server (flask run) keeps its signals as they are


def check_server(broker: Any) -> None:
    """Warn (once per process) when this process runs in a setup that breaks replies."""
    global _checked_pid
    if _checked_pid == os.getpid():
        return
    owner = _gunicorn_owner(worker_only=False)
    if owner is None:
        return
    _checked_pid = os.getpid()
    from .brokers.memory import MemoryBroker

    workers = int(getattr(owner.cfg, "workers", 1) or 1)
    if isinstance(broker, MemoryBroker) and workers > 1:
        log.warning(
            "SSE_BROKER_URL is memory:// but gunicorn runs %d workers: a chat resumed with "
            "Last-Event-ID or stopped with DELETE, and a channel replay, land on a worker "
            "that never saw the stream and fail. Run one worker (-w 1: one gevent worker "
            "holds thousands of streams) or set SSE_BROKER_URL to redis://...",
            workers,
        )
    protocols = getattr(owner.cfg, "http_protocols", None) or []
    if isinstance(protocols, str):
        protocols = protocols.split(",")
    if any(str(p).strip().lower() == "h2" for p in protocols):
        log.warning(
            "gunicorn's own HTTP/2 is on (http_protocols=%s): under the gevent worker it "
            "serves one stream at a time per connection, so an open SSE stream blocks every "
            "other request of that browser connection. Serve HTTP/1.1 from gunicorn and "
            "terminate HTTP/2 in a proxy (nginx) in front of it.",
            ",".join(str(p) for p in protocols),
        )


def _gunicorn_owner(*, worker_only: bool) -> Any | None:
    """The gunicorn worker serving this process (or, unless ``worker_only``, the arbiter
    loading the app with ``--preload``), found through its signal handler or the stack."""
    base = sys.modules.get("gunicorn.workers.base")
    if base is None:
        return None
    kinds: tuple[type, ...] = (base.Worker,)
    arbiter = sys.modules.get("gunicorn.arbiter")
    if not worker_only and arbiter is not None:
        kinds += (arbiter.Arbiter,)
    owner = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    if isinstance(owner, kinds):
        return owner
    frame = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, kinds):
            return owner
        frame = frame.f_back  # type: ignore[assignment]
    return None


def _drain_when_stopping(worker: Any) -> None:
    """Run the drain when ``worker.alive`` turns false, whatever turned it (``max_requests``
    and the reloader do it without a signal). gunicorn's run loop then waits for the open
    connections, which the drain ends at once. Done by giving this one worker object a
    subclass with an ``alive`` property; nothing is patched at import time."""
    cls = type(worker)
    if getattr(cls, "_sse_drains_on_stop", False):
        return

    def get_alive(self: Any) -> bool:
        return bool(self.__dict__.get("alive", False))

    def set_alive(self: Any, value: bool) -> None:
        was = self.__dict__.get("alive", False)
        self.__dict__["alive"] = value
        if was and not value:
            _spawn(lambda: _drain(self))

    attrs = {"alive": property(get_alive, set_alive), "_sse_drains_on_stop": True,
             "__module__": cls.__module__, "__doc__": cls.__doc__}
    worker.__class__ = type(cls.__name__, (cls,), attrs)


def _install_standalone() -> None:
    """``gevent.pywsgi`` and other gevent servers run from the main thread: on SIGTERM or
    SIGINT end the streams, give them a moment to write their hint, then do what the signal
    did before (by default: exit)."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)

        def handler(sig: int, frame: Any, previous: Any = previous) -> None:
            _spawn(lambda: _drain_then(sig, previous))

        if not _set_handler(signum, handler):
            return


def _drain_then(sig: int, previous: Any) -> None:
    from .concurrency import current as current_concurrency
    from .registry import _REGISTRIES  # the streams of every app in this process

    _drain()
    concurrency = current_concurrency()
    deadline = time.monotonic() + STANDALONE_DRAIN_SECONDS
    while sum(len(registry) for registry in list(_REGISTRIES)) and time.monotonic() < deadline:
        concurrency.sleep(0.02)  # the writers finish on their own; nothing to await
    if callable(previous):
        previous(sig, None)
    elif previous == signal.SIG_DFL:
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)


def _drain(worker: Any = None) -> None:
    global _drained_pid
    if _drained_pid == os.getpid():
        return
    _drained_pid = os.getpid()
    if worker is not None:
        # The streams' connections would otherwise wait ``keepalive`` seconds for another
        # request (holding the worker up), and a client reconnecting on one of them would
        # reach this stopping worker instead of a live one.
        with contextlib.suppress(Exception):
            worker.cfg.set("keepalive", 0)
    count = _close_all()
    log.info("shutting down: ended %d open stream(s) with a retry hint", count)


def _close_all() -> int:
    from .registry import close_all_streams

    return close_all_streams()


def _gevent_patched() -> bool:
    from gevent import monkey

    return bool(monkey.is_module_patched("socket"))


def _spawn(fn: Any) -> None:
    # Leave the signal handler at once: run in a new greenlet (a thread without gevent).
    from .concurrency import current as current_concurrency

    current_concurrency().spawn(fn, contextvars.Context())
