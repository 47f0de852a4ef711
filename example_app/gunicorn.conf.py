"""gunicorn settings for long-lived SSE streams (``gunicorn -c example_app/gunicorn.conf.py``).

Every open stream holds one connection of a worker for as long as the client listens, so
the worker must be an async one (gevent): a sync worker serves a single stream at a time.
"""

import multiprocessing
import os

from flask_sse_stream.gunicorn import post_worker_init  # noqa: F401  (ends streams on SIGTERM)

bind = os.environ.get("BIND", "127.0.0.1:8000")
worker_class = "gevent"
workers = int(os.environ.get("WEB_CONCURRENCY", min(2, multiprocessing.cpu_count())))
# Open streams per worker. Each needs a file descriptor: keep it below `ulimit -n`.
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", 10000))
# The gevent worker tells the arbiter it is alive once a second whatever its streams do,
# so this only catches a blocked event loop; it does not cut long streams.
timeout = 30
# On SIGTERM the streams end at once (post_worker_init above); this is only the backstop.
graceful_timeout = 10
keepalive = 5
# Log the path without the query string: chat prompts travel in ?message= on GET.
# gunicorn >= 24 opens a control socket at a fixed path; several servers on one host
# (or the test suite) would fight over it.
control_socket_disable = True
accesslog = "-"
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(L)ss'
