"""The example app: a chat page with streamed replies and a live ticker channel.

Run it with ``gunicorn -c example_app/gunicorn.conf.py "example_app:create_app()"``.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, render_template

from flask_sse_stream import SSE
from flask_sse_stream.chat import (
    ChatBackend,
    DemoBackend,
    OpenAIBackend,
    create_ai_sdk_blueprint,
    create_chat_blueprint,
    create_openai_blueprint,
)

from .ticker import start_ticker

sse = SSE()


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app; settings come from defaults, then ``FLASK_*`` env vars, then ``config``."""
    app = Flask(__name__)
    app.config.from_mapping(
        CHAT_BACKEND="demo",
        CHAT_DEMO_DELAY=0.05,
        OPENAI_BASE_URL=None,
        OPENAI_API_KEY=None,
        OPENAI_MODEL="gpt-4o-mini",
        OPENAI_TIMEOUT=60.0,
        TICKER_INTERVAL=1.0,
        SSE_RETRY_MS=1000,
    )
    app.config.from_prefixed_env()
    if config:
        app.config.update(config)
    sse.init_app(app)
    backend = make_backend(app)
    app.register_blueprint(create_chat_blueprint(backend), url_prefix="/chat")
    # the same generations for the Vercel AI SDK (its default api) and OpenAI clients
    app.register_blueprint(create_ai_sdk_blueprint(backend), url_prefix="/api/chat")
    app.register_blueprint(create_openai_blueprint(backend), url_prefix="/v1")

    @app.get("/")
    def index() -> str:
        return render_template("index.html")

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"ok": True, "pid": os.getpid(), **sse.stats()}

    if app.config["TICKER_INTERVAL"]:
        start_ticker(app, sse, float(app.config["TICKER_INTERVAL"]))
    return app


def make_backend(app: Flask) -> ChatBackend:
    """``CHAT_BACKEND``: ``demo`` (no network) or ``openai`` (any compatible server)."""
    kind = str(app.config["CHAT_BACKEND"]).lower()
    if kind == "demo":
        return DemoBackend(delay=float(app.config["CHAT_DEMO_DELAY"]))
    if kind == "openai":
        return OpenAIBackend(
            base_url=app.config["OPENAI_BASE_URL"],
            api_key=app.config["OPENAI_API_KEY"],
            model=str(app.config["OPENAI_MODEL"]),
            timeout=float(app.config["OPENAI_TIMEOUT"]),
        )
    raise ValueError(f"CHAT_BACKEND must be 'demo' or 'openai', not {kind!r}")
