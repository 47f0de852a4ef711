"""The three chat protocols on one app, with an authorize hook naming the caller, for the
protocol and cap tests. ``FLASK_*`` env vars configure it (``FLASK_CHAT_BACKEND=openai``
with ``FLASK_OPENAI_BASE_URL`` for a fake upstream)."""

from __future__ import annotations

from flask import Flask, Request

from flask_sse_stream import SSE
from flask_sse_stream.chat import (
    ChatBackend,
    DemoBackend,
    OpenAIBackend,
    create_ai_sdk_blueprint,
    create_chat_blueprint,
    create_openai_blueprint,
)


def caller(request: Request) -> bool | str:
    """``Authorization: Bearer NAME`` is the user NAME ("bad" is refused); no header is
    an anonymous caller, counted by its address."""
    header = request.headers.get("Authorization", "")
    if not header:
        return True
    name = header.removeprefix("Bearer ")
    return False if name == "bad" else name


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(CHAT_BACKEND="demo", CHAT_DEMO_DELAY=0.01)
    app.config.from_prefixed_env()
    SSE(app)
    backend: ChatBackend
    if app.config["CHAT_BACKEND"] == "openai":
        backend = OpenAIBackend(base_url=app.config["OPENAI_BASE_URL"], api_key="sk-test",
                                model="fake-model", timeout=10.0)
    else:
        backend = DemoBackend(delay=float(app.config["CHAT_DEMO_DELAY"]))
    app.register_blueprint(create_chat_blueprint(backend, authorize=caller), url_prefix="/chat")
    app.register_blueprint(create_ai_sdk_blueprint(backend, authorize=caller),
                           url_prefix="/api/chat")
    app.register_blueprint(create_openai_blueprint(backend, authorize=caller), url_prefix="/v1")
    return app
