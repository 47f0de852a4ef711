"""gunicorn settings of the example app (``gunicorn -c example_app/gunicorn.conf.py``).

Builds on the library's config (``flask_sse_stream/contrib/gunicorn/config.py``: our gevent
worker class, many
connections, timeouts for long streams, the SIGTERM drain). Workers: one with the
``memory://`` broker (every resume and DELETE must reach the process holding the stream);
``WEB_CONCURRENCY`` of them only when ``FLASK_SSE_BROKER_URL`` names a shared broker.
"""

import os

from flask_sse_stream.contrib.gunicorn.config import *  # noqa: F403

_scheme = os.environ.get("FLASK_SSE_BROKER_URL", "memory://").partition("://")[0].lower()
_shared_broker = _scheme in ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster",
                            "redis+sentinel", "rediss+sentinel")
workers = int(os.environ.get("WEB_CONCURRENCY", 2)) if _shared_broker else 1
accesslog = "-"
# Log the path without the query string: chat prompts travel in ?message= on GET.
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(L)ss'
