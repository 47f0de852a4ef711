"""The example app: a chat page with streamed replies and a live ticker channel, and a
live dashboard (``/dashboard``: visitors online, an exchange rate, a sales total).

Run it with ``gunicorn -c example_app/gunicorn.conf.py "example_app:create_app()"``.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from typing import Any

from flask import Flask, Request, Response, render_template, request

from flask_sse_stream import SSE
from flask_sse_stream.chat import (
    ChatBackend,
    DemoBackend,
    OpenAIBackend,
    create_ai_sdk_blueprint,
    create_chat_blueprint,
    create_openai_blueprint,
)

from .dashboard import register_dashboard
from .ticker import start_ticker

sse = SSE()


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app; settings come from defaults, then ``FLASK_*`` env vars, then ``config``."""
    app = Flask(__name__)
    app.config.from_mapping(
        CHAT_BACKEND="demo",
        CHAT_DEMO_DELAY=0.05,
        CHAT_DEMO_PARTS=False,
        OPENAI_BASE_URL=None,
        OPENAI_API_KEY=None,
        OPENAI_MODEL="gpt-4o-mini",
        OPENAI_TIMEOUT=60.0,
        TICKER_INTERVAL=1.0,
        TICKER_TOKEN_SECONDS=300,
        DASHBOARD_INTERVAL=None,  # None: as TICKER_INTERVAL
        SSE_RETRY_MS=1000,
        SSE_PRESENCE=True,  # the dashboard's "Online" comes from presence events
        CHAT_TOKEN=None,
    )
    app.config.from_prefixed_env()
    if config:
        app.config.update(config)
    sse.init_app(app)
    authorize = make_authorize(app)
    backend = make_backend(app)
    app.register_blueprint(create_chat_blueprint(backend, authorize=authorize), url_prefix="/chat")
    # the same generations for the Vercel AI SDK (its default api) and OpenAI clients
    app.register_blueprint(
        create_ai_sdk_blueprint(backend, authorize=authorize), url_prefix="/api/chat"
    )
    app.register_blueprint(create_openai_blueprint(backend, authorize=authorize), url_prefix="/v1")

    @app.get("/")
    def index() -> Response:
        response = Response(render_template("index.html", chat_token=app.config["CHAT_TOKEN"]))
        if app.config["CHAT_TOKEN"]:
            set_token_cookie(response, str(app.config["CHAT_TOKEN"]))
        return response

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"ok": True, "pid": os.getpid(), **sse.stats()}

    @app.get("/ticker-token")
    def ticker_token() -> dict[str, Any]:
        """A subscribe token for the ticker (``null`` without a ``SECRET_KEY``); the
        channel route requires one with ``SSE_SUBSCRIBE_TOKENS = True``."""
        if not app.config.get("SECRET_KEY"):
            return {"token": None}
        seconds = float(app.config["TICKER_TOKEN_SECONDS"])
        return {"token": sse.subscribe_token(["ticker"], expires_in=seconds)}

    if app.config["TICKER_INTERVAL"]:
        start_ticker(app, sse, float(app.config["TICKER_INTERVAL"]))
    register_dashboard(app, sse)
    return app


def make_backend(app: Flask) -> ChatBackend:
    """``CHAT_BACKEND``: ``demo`` (no network; with ``CHAT_DEMO_PARTS`` it reasons, calls a
    demo tool and cites a source before its reply) or ``openai`` (any compatible server)."""
    kind = str(app.config["CHAT_BACKEND"]).lower()
    if kind == "demo":
        parts = str(app.config["CHAT_DEMO_PARTS"]).lower() in ("1", "true", "yes", "on")
        return DemoBackend(delay=float(app.config["CHAT_DEMO_DELAY"]), parts=parts)
    if kind == "openai":
        return OpenAIBackend(
            base_url=app.config["OPENAI_BASE_URL"],
            api_key=app.config["OPENAI_API_KEY"],
            model=str(app.config["OPENAI_MODEL"]),
            timeout=float(app.config["OPENAI_TIMEOUT"]),
        )
    raise ValueError(f"CHAT_BACKEND must be 'demo' or 'openai', not {kind!r}")


TOKEN_HEADER = "token"
TOKEN_COOKIE = "chat_token"


def make_authorize(app: Flask) -> Callable[[Request], bool] | None:
    """``CHAT_TOKEN`` (env ``FLASK_CHAT_TOKEN``) set: the chat routes need that token.

    Fetch clients (POST, DELETE, a resumed POST) send it as the header ``token: <value>``;
    OpenAI SDKs (``/v1``) send it as their API key, ``Authorization: Bearer <value>``.
    ``EventSource`` cannot set headers, so a GET may instead carry the ``chat_token``
    cookie that the page sets when it is served: HttpOnly and ``SameSite=Strict``, so
    other sites cannot start generations with a visitor's cookie, and the token never
    appears in URLs (logs, history, Referer). Unset: the routes are open.
    """
    token = app.config.get("CHAT_TOKEN")
    if not token:
        return None
    expected = str(token).encode()

    def authorize(req: Request) -> bool:
        given = req.headers.get(TOKEN_HEADER)
        bearer = req.headers.get("Authorization", "")
        if given is None and bearer.startswith("Bearer "):
            given = bearer[7:]
        if given is None and req.method == "GET":
            given = req.cookies.get(TOKEN_COOKIE)
        return given is not None and hmac.compare_digest(given.encode(), expected)

    return authorize


def set_token_cookie(response: Response, token: str) -> None:
    """The cookie GET streams authenticate with (see :func:`make_authorize`)."""
    response.set_cookie(
        TOKEN_COOKIE,
        token,
        path=f"{request.script_root}/chat",
        httponly=True,
        samesite="Strict",
        secure=request.is_secure,
    )
