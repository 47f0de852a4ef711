"""The three chat protocols with the hooks an app adds around them, for the hook tests.

``FLASK_*`` environment variables configure it:

* ``FLASK_CHAT_BACKEND`` ``demo`` (default) or ``openai`` with ``FLASK_OPENAI_BASE_URL``;
* ``FLASK_HOOKS_PEEK_JSON=1``: a ``before_request`` hook reads ``request.get_json()``
  (as apps do for logging or auth) and an ``after_request`` hook reports what it saw in
  ``X-Peeked``;
* ``FLASK_HOOKS_STOP_ON_DISCONNECT=true|false``: passed to every chat blueprint as
  ``stop_on_disconnect`` (left out when unset, so each blueprint's default applies);
* ``FLASK_HOOKS_ON_FINISH=1``: every blueprint gets ``on_finish``, which records each
  finished reply for ``GET /finished``; while ``POST /finish-gate?hold=1`` holds the
  gate (``hold=0`` opens it), the callback waits after recording, up to 30 s.

``GET /healthz`` gives ``sse.stats()`` and the worker's pid.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from flask import Flask, Response, g, request

from flask_sse_stream import SSE
from flask_sse_stream.chat import (
    ChatBackend,
    DemoBackend,
    OpenAIBackend,
    create_ai_sdk_blueprint,
    create_chat_blueprint,
    create_openai_blueprint,
)


def record_of(reply: Any) -> dict[str, Any]:
    """A finished reply (``flask_sse_stream.chat.FinishedReply``) as JSON."""
    return {
        "stream_id": reply.stream_id,
        "chat_id": reply.chat_id,
        "messages": reply.messages,
        "text": reply.text,
        "parts": [p if isinstance(p, str) else repr(p) for p in reply.parts],
        "finish_reason": reply.finish_reason,
        "error": reply.error,
        "usage": reply.usage,
        "pid": os.getpid(),
    }


def make_backend(app: Flask) -> ChatBackend:
    if app.config["CHAT_BACKEND"] == "openai":
        return OpenAIBackend(base_url=app.config["OPENAI_BASE_URL"], api_key="sk-test",
                             model="fake-model", timeout=30.0)
    return DemoBackend(delay=float(app.config["CHAT_DEMO_DELAY"]))


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(CHAT_BACKEND="demo", CHAT_DEMO_DELAY=0.01)
    app.config.from_prefixed_env()
    sse = SSE(app)
    finished: list[dict[str, Any]] = []
    gate = threading.Event()  # set: the on_finish callback returns at once
    gate.set()

    def on_finish(reply: Any) -> None:
        finished.append(record_of(reply))
        gate.wait(30)

    options: dict[str, Any] = {}
    if app.config.get("HOOKS_STOP_ON_DISCONNECT") is not None:
        options["stop_on_disconnect"] = bool(app.config["HOOKS_STOP_ON_DISCONNECT"])
    if app.config.get("HOOKS_ON_FINISH"):
        options["on_finish"] = on_finish
    backend = make_backend(app)
    app.register_blueprint(create_chat_blueprint(backend, **options), url_prefix="/chat")
    app.register_blueprint(create_ai_sdk_blueprint(backend, **options),
                           url_prefix="/api/chat")
    app.register_blueprint(create_openai_blueprint(backend, **options), url_prefix="/v1")

    if app.config.get("HOOKS_PEEK_JSON"):

        @app.before_request
        def peek() -> None:
            g.peeked = request.get_json(silent=True)

        @app.after_request
        def report(response: Response) -> Response:
            response.headers["X-Peeked"] = type(g.get("peeked")).__name__
            return response

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"pid": os.getpid(), **sse.stats()}

    @app.get("/finished")
    def finished_replies() -> dict[str, Any]:
        return {"pid": os.getpid(), "finished": finished}

    @app.post("/finish-gate")
    def finish_gate() -> dict[str, Any]:
        if request.args.get("hold") == "1":
            gate.clear()
        else:
            gate.set()
        return {"held": not gate.is_set()}

    return app
