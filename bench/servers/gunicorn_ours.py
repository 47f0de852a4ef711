"""gunicorn settings for ours in the relay and storm scenarios: the packaged config.

Everything of ``flask_sse_stream``'s packaged gunicorn config (our gevent worker class, timeouts,
the SIGTERM drain), with the bench's sizes on top: room for every stream of the storm
(the packaged ``worker_connections`` is 10,000; the storm holds 11,000 and more while it
reconnects), the same backlog as every other server here, no access log.
"""

import os

from flask_sse_stream.contrib.gunicorn.config import *  # noqa: F403

workers = int(os.environ.get("BENCH_WORKERS", "1"))
worker_connections = 100_000
backlog = 4096
loglevel = "warning"
accesslog = None
