"""A channel app with presence on, for the presence and ``last=N`` tests on real servers.

``TEST_BROKER_URL`` picks the broker; ``TEST_PRESENCE_TTL`` lowers how long a process's
counts outlive it on Redis (``flask_sse_stream.redis.presence.TTL``, 15 s by default), so
that a killed worker leaves the count within seconds. Streams answer with the header
``X-Worker-Pid`` (which worker holds them).
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, Response, request

from flask_sse_stream import SSE, BrokerError


def create_app() -> Flask:
    if os.environ.get("TEST_PRESENCE_TTL"):
        from flask_sse_stream.redis import presence

        presence.TTL = float(os.environ["TEST_PRESENCE_TTL"])
    app = Flask(__name__)
    app.config.update(
        SSE_BROKER_URL=os.environ.get("TEST_BROKER_URL", "memory://"),
        SSE_HEARTBEAT_INTERVAL=float(os.environ.get("TEST_HEARTBEAT", "1")),
        SSE_HISTORY_SIZE=int(os.environ.get("TEST_HISTORY", "100")),
        SSE_PRESENCE=True,
        SSE_SUBSCRIBER_QUEUE=1024,
    )
    sse = SSE(app)

    @app.after_request
    def name_the_worker(response: Response) -> Response:
        response.headers["X-Worker-Pid"] = str(os.getpid())
        return response

    @app.post("/publish")
    def publish() -> Any:
        body = request.get_json()
        try:
            ids = [sse.publish({"n": n}, channel=body["channel"])
                   for n in range(body.get("start", 0), body.get("start", 0) + body["count"])]
        except BrokerError as exc:
            return {"error": str(exc)}, 503
        return {"ids": ids}

    @app.get("/stats")
    def stats() -> Any:
        return {**sse.stats(), "pid": os.getpid()}

    return app
