"""The example app plus a ``POST /publish`` route, for the Redis topology tests.

Everything else (the broker URL from ``FLASK_SSE_BROKER_URL``, the channel stream, the
chat blueprints) is the example app's own; the route only lets a test publish through
``sse.publish`` on a chosen server and see whether the publish succeeded.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, request

from example_app import create_app as create_example_app
from example_app import sse
from flask_sse_stream import BrokerError


def create_app() -> Flask:
    app = create_example_app()

    @app.post("/publish")
    def publish() -> Any:
        body = request.get_json()
        try:
            event_id = sse.publish(body.get("data"), channel=body["channel"],
                                   event=body.get("event"))
        except BrokerError as exc:
            return {"error": str(exc)}, 503
        return {"id": event_id}

    return app
