"""A gunicorn config for SSE apps:
``gunicorn -c python:flask_sse_stream.contrib.gunicorn.config app:app``.

Every open stream holds one connection of a worker for as long as the client listens, so
the worker is an async one (our gevent worker class: see ``contrib/gunicorn``); a sync
worker serves a single stream at a time. One worker by default: with the ``memory://``
broker every stream, resume and DELETE must reach the process that holds it (one gevent
worker holds thousands of streams). With a shared broker (``redis://``) set
``WEB_CONCURRENCY`` or ``-w`` for more. To change a setting, pass it on the command line
(it wins over the config) or copy this file.
"""

from __future__ import annotations

import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
worker_class = "flask_sse_stream.contrib.gunicorn.GeventWorker"
workers = 1
# Open streams per worker. Each needs a file descriptor: keep it below `ulimit -n`.
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", 10000))
# The gevent worker tells the arbiter it is alive once a second whatever its streams do,
# so this only catches a blocked event loop; it does not cut long streams.
timeout = 30
# On any stop the streams end at once (the worker class drains them); only a backstop.
graceful_timeout = 10
keepalive = 5
# gunicorn >= 24 opens a control socket at a fixed path; several servers on one host
# would fight over it. (Older gunicorn ignores an unknown setting in a config file.)
control_socket_disable = True
