"""The core test app plus the chat blueprint (demo backend, no delay), for the hostile
input tests: every route that parses input, on the broker named by ``TEST_BROKER_URL``."""

from __future__ import annotations

import os

from flask import Flask

from flask_sse_stream.chat import DemoBackend, create_chat_blueprint
from tests.apps.core_app import create_app as create_core_app


def create_app() -> Flask:
    app = create_core_app()
    app.config["CHAT_GRACE_SECONDS"] = float(os.environ.get("TEST_CHAT_GRACE", "0.2"))
    app.register_blueprint(create_chat_blueprint(DemoBackend(delay=0)), url_prefix="/chat")
    return app
