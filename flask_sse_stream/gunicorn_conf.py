"""A gunicorn config for SSE apps: ``gunicorn -c python:flask_sse_stream.gunicorn_conf app:app``.

Every open stream holds one connection of a worker for as long as the client listens, so
the worker is an async one (gevent): a sync worker serves a single stream at a time. One
worker by default: with the ``memory://`` broker every stream, resume and DELETE must reach
the process that holds it (one gevent worker holds thousands of streams). With a shared
broker (``redis://``) set ``WEB_CONCURRENCY`` or ``-w`` for more. To change a setting, pass
it on the command line (it wins over the config) or copy this file.
"""

from __future__ import annotations

import os
from typing import Any

from flask_sse_stream.gunicorn import check_server, install_shutdown_handler

bind = os.environ.get("BIND", "127.0.0.1:8000")
worker_class = "gevent"
workers = 1
# Open streams per worker. Each needs a file descriptor: keep it below `ulimit -n`.
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", 10000))
# The gevent worker tells the arbiter it is alive once a second whatever its streams do,
# so this only catches a blocked event loop; it does not cut long streams.
timeout = 30
# On SIGTERM the streams end at once (post_worker_init below); this is only the backstop.
graceful_timeout = 10
keepalive = 5
# gunicorn >= 24 opens a control socket at a fixed path; several servers on one host
# would fight over it. (Older gunicorn ignores an unknown setting in a config file.)
control_socket_disable = True


def post_worker_init(worker: Any) -> None:
    """End every open stream with a ``retry:`` hint when the worker stops."""
    install_shutdown_handler(worker)


def when_ready(server: Any) -> None:
    """Warn once in the arbiter about gunicorn's own HTTP/2 (see the README)."""
    check_server(None)
