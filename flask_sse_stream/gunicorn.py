"""gunicorn integration: end every open stream as soon as a worker is asked to stop.

gunicorn's graceful shutdown waits for open responses to finish, and an SSE response never
finishes by itself, so without this a deploy hangs for ``graceful_timeout`` and then cuts
the streams. Use it from your gunicorn config::

    from flask_sse_stream.gunicorn import post_worker_init  # noqa: F401

or call :func:`install_shutdown_handler` from your own ``post_worker_init(worker)``.
"""

from __future__ import annotations

import signal
from typing import Any

from .registry import close_all_streams

__all__ = ["install_shutdown_handler", "post_worker_init"]


def install_shutdown_handler(worker: Any) -> None:
    """Chain a handler to the worker's SIGTERM/SIGINT/SIGQUIT handling that ends all open
    streams (each gets a last ``retry:`` line, so clients reconnect to another worker)."""
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        previous = signal.getsignal(signum)

        def handler(sig: int, frame: Any, previous: Any = previous) -> None:
            _spawn(close_all_streams)
            if callable(previous):
                previous(sig, frame)

        signal.signal(signum, handler)


def _spawn(fn: Any) -> None:
    # Leave the signal handler at once: under gevent, run in a new greenlet.
    try:
        import gevent
        from gevent import monkey

        if monkey.is_module_patched("signal") or monkey.is_module_patched("socket"):
            gevent.spawn(fn)
            return
    except ImportError:
        pass
    fn()


def post_worker_init(worker: Any) -> None:
    """A ready-made gunicorn ``post_worker_init`` hook."""
    install_shutdown_handler(worker)
