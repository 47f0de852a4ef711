"""A small app exercising ``@sse_stream`` for the core tests (run under real gunicorn)."""

from __future__ import annotations

import gc
import os
import time
from collections import Counter
from typing import Any

from flask import Flask, current_app, g, jsonify, request

from flask_sse_stream import SSE, BrokerError, Event, last_event_id, sse_stream


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["SSE_HEARTBEAT_INTERVAL"] = float(os.environ.get("TEST_HEARTBEAT", "0.3"))
    if os.environ.get("TEST_MAX_STREAMS"):
        app.config["SSE_MAX_STREAMS"] = int(os.environ["TEST_MAX_STREAMS"])
    app.config["SSE_BROKER_URL"] = os.environ.get("TEST_BROKER_URL", "memory://")
    app.config["SSE_HISTORY_SIZE"] = int(os.environ.get("TEST_HISTORY", "1000"))
    app.config["SSE_SUBSCRIBER_QUEUE"] = int(os.environ.get("TEST_QUEUE", "256"))
    if os.environ.get("TEST_WRITE_TIMEOUT"):
        app.config["SSE_WRITE_TIMEOUT"] = float(os.environ["TEST_WRITE_TIMEOUT"])

    def authorize(channel: str) -> bool:
        return not channel.startswith("private") or request.headers.get("X-User") == "admin"

    sse = SSE(app, authorize=authorize)

    @app.before_request
    def set_user() -> None:
        g.user = request.headers.get("X-User", "anonymous")

    @app.get("/count")
    @sse_stream
    def count() -> Any:
        for i in range(int(request.args.get("n", "3"))):
            yield Event({"i": i}, id=i)

    @app.get("/kinds")
    @sse_stream(retry=1500, headers={"X-Extra": "yes"})
    def kinds() -> Any:
        yield "plain\nline two"
        yield {"a": 1}
        yield [1, 2]
        yield b"bytes"
        yield Event("named", event="custom", id="x1")
        yield Event(comment="just a comment")

    @app.get("/slow-first")
    @sse_stream
    def slow_first() -> Any:
        time.sleep(float(request.args.get("wait", "1.0")))  # cooperative: gevent-patched
        yield "late"

    @app.get("/blocked")
    @sse_stream
    def blocked() -> Any:
        name = request.args["name"]
        try:
            yield {"started": name}
            time.sleep(3600)  # blocked "forever", e.g. waiting on an upstream model
            yield "never"
        finally:
            with app.app_context():
                sse.publish({"closed": name}, channel="closed")

    @app.get("/ticking")
    @sse_stream
    def ticking() -> Any:
        name = request.args["name"]
        try:
            n = 0
            while True:
                yield {"tick": n}
                n += 1
                time.sleep(0.2)
        finally:
            with app.app_context():
                sse.publish({"closed": name}, channel="closed")

    @app.get("/context")
    @sse_stream
    def context() -> Any:
        time.sleep(0.05)  # make sure we run after the view returned
        yield {
            "path": request.path,
            "app": current_app.name,
            "user": g.user,
            "last_event_id": last_event_id(),
        }

    @app.get("/validated")
    @sse_stream
    def validated() -> Any:
        if not request.args.get("x"):
            return jsonify(error="x is required"), 400

        def events() -> Any:
            yield {"x": request.args["x"]}

        return events()

    @app.get("/fails")
    @sse_stream
    def fails() -> Any:
        yield "before"
        raise RuntimeError("boom")

    @app.post("/publish")
    def publish() -> Any:
        body = request.get_json()
        ids = []
        try:
            for _ in range(int(body.get("count", 1))):
                data = body["data"] if "size" not in body else "x" * int(body["size"])
                channel = body.get("channel", "sse")
                ids.append(sse.publish(data, channel=channel, event=body.get("event")))
        except BrokerError as exc:
            return {"error": str(exc)}, 503
        return {"id": ids[-1], "ids": ids}

    @app.post("/garbage")
    def garbage() -> Any:
        """``?arm=1``: collect, then turn automatic collection off. Then: collect keeping
        what was unreachable (``gc.garbage``), turn collection back on and say what it was:
        objects that only the garbage collector could free (reference cycles)."""
        if request.args.get("arm"):
            gc.collect()
            gc.disable()
            return {"armed": True}
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            gc.collect()
            kinds = Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage)
        finally:
            gc.garbage.clear()
            gc.set_debug(0)
            gc.enable()
        return {"total": sum(kinds.values()), "kinds": dict(kinds)}

    @app.get("/stats")
    def stats() -> Any:
        greenlets = 0
        try:
            from greenlet import greenlet

            greenlets = sum(1 for o in gc.get_objects() if isinstance(o, greenlet) and o)
        except ImportError:
            pass
        import psutil

        return {
            **sse.stats(),
            "greenlets": greenlets,
            "pid": os.getpid(),
            "rss": psutil.Process().memory_info().rss,
        }

    return app
