"""An app that publishes from gevent's native threadpool (real OS threads beside the
hub), for the broker tests. ``FLASK_SSE_BROKER_URL`` picks the broker."""

from __future__ import annotations

from typing import Any

import gevent
from flask import Flask, request

from flask_sse_stream import SSE, BrokerError


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["SSE_HEARTBEAT_INTERVAL"] = 1.0
    app.config.from_prefixed_env()
    sse = SSE(app)

    def publish_one(channel: str, i: int) -> str:
        """One publish in a native thread, and what its caller saw."""
        with app.app_context():
            try:
                sse.publish({"i": i}, channel=channel)
            except BrokerError:
                return "BrokerError"
            except Exception as exc:  # what a caller would have to handle instead
                return f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"
        return "ok"

    @app.post("/publish-from-threads")
    def publish_from_threads() -> Any:
        """``?channel=NAME&n=N``: publish ``{"i": 0..N-1}`` from the hub's threadpool;
        the outcome of each, in order."""
        channel, n = request.args["channel"], int(request.args["n"])
        pool = gevent.get_hub().threadpool
        pending = [pool.spawn(publish_one, channel, i) for i in range(n)]
        return {"outcomes": [result.get() for result in pending]}

    @app.post("/publish")
    def publish() -> Any:
        """``{"channel", "data"}``: one publish from the request's own greenlet."""
        body = request.get_json()
        return {"id": sse.publish(body["data"], channel=body["channel"])}

    return app
