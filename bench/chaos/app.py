"""The app under chaos: channels and the chat blueprints on Redis, plus two test routes.

``POST /chaos/publish`` publishes a batch the harness numbered itself (so the checker can
tell a gap from a failed publish); ``GET /chaos/stats`` samples this worker's resources.
Served by gunicorn: ``bench.chaos.app:create_app()``.
"""

from __future__ import annotations

import gc
import os
from typing import Any

import psutil
from flask import Flask, jsonify, request
from greenlet import greenlet

from flask_sse_stream import SSE, BrokerError
from flask_sse_stream.chat import DemoBackend, create_chat_blueprint

sse = SSE()


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(
        SSE_BROKER_URL=os.environ.get("CHAOS_REDIS_URL", "redis://127.0.0.1:6379/0"),
        SSE_HISTORY_SIZE=int(os.environ.get("CHAOS_HISTORY", "200")),
        SSE_HEARTBEAT_INTERVAL=float(os.environ.get("CHAOS_HEARTBEAT", "2")),
        SSE_RETRY_MS=500,
        SSE_SHUTDOWN_RETRY_MS=500,
        SSE_SUBSCRIBER_QUEUE=int(os.environ.get("CHAOS_QUEUE", "64")),
        CHAT_GRACE_SECONDS=30.0,
        SECRET_KEY="chaos",
    )
    sse.init_app(app)
    backend = DemoBackend(delay=float(os.environ.get("CHAOS_CHAT_DELAY", "0.03")))
    app.register_blueprint(create_chat_blueprint(backend), url_prefix="/chat")
    try:  # the AI SDK protocol, where this version has it
        from flask_sse_stream.chat import create_ai_sdk_blueprint  # type: ignore[attr-defined]
    except ImportError:
        pass
    else:
        app.register_blueprint(create_ai_sdk_blueprint(backend), url_prefix="/api/chat")

    @app.post("/chaos/publish")
    def publish() -> Any:
        body = request.get_json()
        channel = body["channel"]
        ids: list[str] = []
        for item in body["items"]:
            try:
                ids.append(sse.publish(item, channel=channel))
            except BrokerError as exc:
                return jsonify(ids=ids, error=str(exc)), 503
        return jsonify(ids=ids)

    @app.get("/chaos/stats")
    def stats() -> Any:
        proc = psutil.Process()
        greenlets = sum(1 for o in gc.get_objects() if isinstance(o, greenlet))
        return jsonify(
            pid=os.getpid(),
            rss=proc.memory_info().rss,
            fds=proc.num_fds(),
            greenlets=greenlets,
            **sse.stats(),
        )

    return app
