"""The chat blueprint with an authorize hook, for the auth tests."""

from __future__ import annotations

from flask import Flask, Request

from flask_sse_stream import SSE
from flask_sse_stream.chat import DemoBackend, create_chat_blueprint

USERS: dict[str, bool | str] = {"Bearer good": True, "Bearer alice": "alice", "Bearer bob": "bob"}


def allowed(request: Request) -> bool | str:
    """True for an anonymous-but-allowed client, a user id for a known user."""
    return USERS.get(request.headers.get("Authorization", ""), False)


def create_app() -> Flask:
    app = Flask(__name__)
    SSE(app)
    app.register_blueprint(
        create_chat_blueprint(DemoBackend(delay=0.01), authorize=allowed), url_prefix="/ai"
    )
    return app
