"""gunicorn settings shared by every gevent server under test (bench/run.py passes -b)."""

import os

# ours runs our worker class (bench/run.py sets it), every other server plain gevent
worker_class = os.environ.get("BENCH_WORKER_CLASS", "gevent")
workers = int(os.environ.get("BENCH_WORKERS", "1"))
worker_connections = 100_000  # the default (1000) would cap streams per worker
backlog = 4096
timeout = 300  # a long server-side publish loop must not get the worker killed
graceful_timeout = 3
keepalive = 5
loglevel = "warning"
accesslog = None
