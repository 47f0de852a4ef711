"""The three chat protocols on one app, with an authorize hook naming the caller, for the
protocol and cap tests. ``FLASK_*`` env vars configure it: ``FLASK_CHAT_BACKEND`` is
``demo``, ``scripted`` (``tests/apps/scripted.py``: replies with parts) or ``openai`` (with
``FLASK_OPENAI_BASE_URL`` for a fake upstream); ``FLASK_CHAT_DEMO_DELAY`` the seconds per
piece; ``FLASK_STOP_ON_DISCONNECT=1`` stops replies whose clients left (every protocol).
``GET /finished`` lists what ``on_finish`` got, in this process."""

from __future__ import annotations

from typing import Any, cast

from flask import Flask, Request

from flask_sse_stream import SSE
from flask_sse_stream.chat import (
    ChatBackend,
    DemoBackend,
    FinishedReply,
    OpenAIBackend,
    create_ai_sdk_blueprint,
    create_chat_blueprint,
    create_openai_blueprint,
)
from tests.apps.scripted import ScriptedBackend


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
    delay = float(app.config["CHAT_DEMO_DELAY"])
    if app.config["CHAT_BACKEND"] == "openai":
        backend = OpenAIBackend(base_url=app.config["OPENAI_BASE_URL"], api_key="sk-test",
                                model="fake-model", timeout=10.0)
    elif app.config["CHAT_BACKEND"] == "scripted":
        scripted = ScriptedBackend(delay=delay)
        backend = cast(ChatBackend, scripted)
    else:
        backend = DemoBackend(delay=delay)
    finished: list[dict[str, Any]] = []

    def record(reply: FinishedReply) -> None:
        finished.append({
            "stream_id": reply.stream_id, "chat_id": reply.chat_id, "text": reply.text,
            "parts": [type(p).__name__ for p in reply.parts],
            "finish_reason": reply.finish_reason, "error": reply.error,
            "messages": len(reply.messages),
        })

    stop = str(app.config.get("STOP_ON_DISCONNECT", "")).lower() in ("1", "true")
    options: dict[str, Any] = {"authorize": caller, "on_finish": record}
    app.register_blueprint(create_chat_blueprint(backend, stop_on_disconnect=stop, **options),
                           url_prefix="/chat")
    app.register_blueprint(create_ai_sdk_blueprint(backend, stop_on_disconnect=stop, **options),
                           url_prefix="/api/chat")
    app.register_blueprint(create_openai_blueprint(backend, **options), url_prefix="/v1")

    @app.get("/finished")
    def finished_replies() -> dict[str, Any]:
        return {"replies": finished}

    @app.post("/release")
    def release() -> dict[str, Any]:
        """Replies of the ``held-parts`` script go on past their hold."""
        held = app.config["CHAT_BACKEND"] == "scripted"
        if held:
            scripted.release()
        return {"released": held}

    return app
