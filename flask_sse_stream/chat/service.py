"""What the three chat protocols share: per-app state, callers, caps, start and follow.

Each protocol (``protocols/native.py``, ``ai_sdk.py``, ``openai.py``) is a
:class:`GenerationRoutes` subclass that parses its requests and frames its replies; the
generation log, resume, cancel, the grace period, ``authorize`` and the caps on running
generations are here, once.

Config (resolved and checked once by ``settings.py`` at the first registration on an
app): ``CHAT_MAX_CHARS``, ``CHAT_MAX_MESSAGES``, ``CHAT_MAX_BODY_BYTES``,
``CHAT_GRACE_SECONDS``, ``CHAT_RETENTION_SECONDS``, ``CHAT_QUEUE``,
``CHAT_MAX_GENERATIONS`` and ``CHAT_MAX_GENERATIONS_PER_CALLER``. The store follows
``SSE_BROKER_URL``, chosen by the same rule as the channels' broker.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, Request, Response, current_app, request
from flask.blueprints import BlueprintSetupState
from werkzeug.routing import BaseConverter

from .. import runtime
from ..errors import BrokerError, json_error
from ..metrics import CHAT_CAPS_KEY
from ..runtime import Mailbox, Sink
from ..settings import Settings, settings_for
from ..stream.options import StreamOptions
from ..stream.registry import registry_for
from ..stream.requests import refuse_stream
from ..stream.views import stream_response
from .backends import ChatBackend
from .protocols.framing import Framer, FramingSink
from .runner import Generations, OnFinish
from .store import Follow, GenerationStore, MemoryGenerationStore
from .validation import ChatInputError, ChatLimits

__all__ = [
    "Caller",
    "ChatAuthorize",
    "GenerationCaps",
    "GenerationRoutes",
]

ChatAuthorize = Callable[[Request], "bool | str | None"]

CAPS_KEY = CHAT_CAPS_KEY  # read by sse.stats() too
CAP_RETRY_AFTER = 5  # seconds: a generation typically ends within that


@dataclass
class ChatState:
    generations: Generations
    limits: ChatLimits
    queue_size: int


@dataclass(frozen=True)
class Caller:
    """Who is asking: ``user`` binds generations (``authorize`` returned a user id);
    ``key`` is what the per-caller cap counts (that id, else the client address)."""

    user: str | None
    key: str


class GenerationCaps:
    """Running generations of this process, in total and per caller (shared by every
    chat blueprint of an app). A generation counts from its start until it ends, also
    while it runs on without a client during the grace period."""

    def __init__(self, total: int | None, per_caller: int | None) -> None:
        self.total = total
        self.per_caller = per_caller
        self.running = 0
        self.started = 0  # cumulative, for sse.stats()
        self.by_caller: dict[str, int] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_app(cls, app: Flask) -> GenerationCaps:
        caps = app.extensions.get(CAPS_KEY)
        if caps is None:
            settings = settings_for(app)
            caps = app.extensions[CAPS_KEY] = cls(
                settings.chat_max_generations, settings.chat_max_generations_per_caller
            )
        return caps

    def acquire(self, key: str) -> bool:
        with self._lock:
            mine = self.by_caller.get(key, 0)
            if self.total is not None and self.running >= self.total:
                return False
            if self.per_caller is not None and mine >= self.per_caller:
                return False
            self.running += 1
            self.by_caller[key] = mine + 1
            return True

    def release(self, key: str) -> None:
        with self._lock:
            self.running -= 1
            left = self.by_caller.get(key, 1) - 1
            if left > 0:
                self.by_caller[key] = left
            else:
                self.by_caller.pop(key, None)


def make_store(settings: Settings) -> GenerationStore:
    retention = settings.chat_retention_seconds
    if settings.broker_kind == "redis":
        from .store.redis import RedisGenerationStore

        return RedisGenerationStore(settings.broker_url, retention=retention)
    return MemoryGenerationStore(retention=retention)


class AnyText(BaseConverter):
    """A URL part that may be empty or hold slashes (ids in DELETE routes)."""

    regex = "[\\s\\S]*"  # newlines too
    part_isolating = False


class GenerationRoutes:
    """One protocol's blueprint over the shared generation machinery.

    A subclass adds its routes in :meth:`add_routes` and may override :meth:`error` (the
    shape of its JSON errors). ``authorize(request)`` is checked by :meth:`caller` on
    every route: false answers 401; a user id (a ``str``) binds each generation to that
    user, so another user's ids grant nothing.
    """

    def __init__(
        self, backend: ChatBackend, *, name: str, authorize: ChatAuthorize | None,
        import_name: str, stop_on_disconnect: bool = False, on_finish: OnFinish | None = None,
    ) -> None:
        self.backend = backend
        self.authorize = authorize
        self.stop_on_disconnect = stop_on_disconnect
        self.on_finish = on_finish
        self.state_key = f"flask_sse_stream.chat.{name}"
        self.blueprint = bp = Blueprint(name, import_name)
        bp.record(self._setup)
        bp.register_error_handler(ChatInputError, self._input_error)
        bp.register_error_handler(BrokerError, self._broker_error)
        self.add_routes(bp)

    def add_routes(self, bp: Blueprint) -> None:
        raise NotImplementedError

    # -- per app -------------------------------------------------------------------------

    def _setup(self, setup_state: BlueprintSetupState) -> None:
        app = setup_state.app
        app.url_map.converters.setdefault("sse_any", AnyText)
        if self.state_key in app.extensions:
            return  # registered twice on one app (two prefixes): share the state
        settings = settings_for(app, reload=True)  # checks every key (ValueError names it)
        generations = Generations(
            make_store(settings), self.backend, settings.chat_grace_seconds,
            stop_on_disconnect=self.stop_on_disconnect, on_finish=self.on_finish,
        )
        app.extensions[self.state_key] = ChatState(
            generations=generations,
            limits=ChatLimits(
                max_chars=settings.chat_max_chars,
                max_messages=settings.chat_max_messages,
                max_body_bytes=settings.chat_max_body_bytes,
            ),
            queue_size=settings.chat_queue,
        )
        registry_for(app).on_shutdown(generations.stop_all)

    def state(self) -> ChatState:
        return current_app.extensions[self.state_key]  # type: ignore[no-any-return]

    @property
    def generations(self) -> Generations:
        return self.state().generations

    # -- errors --------------------------------------------------------------------------

    def error(self, status: int, message: str, *, param: str | None = None) -> Response:
        """This protocol's JSON error (``{"error": message}`` unless overridden)."""
        return json_error(message, status)

    def _input_error(self, exc: ChatInputError) -> Response:
        response = self.error(exc.status, exc.message, param=exc.param)
        if exc.retry_after is not None:
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    def _broker_error(self, exc: BrokerError) -> Response:
        current_app.logger.warning("chat: %s", exc)
        if request.method == "GET":
            # EventSource gets a 200 with a retry: hint (any other status ends it for good)
            return refuse_stream("the event broker is unavailable, retry later")
        response = self.error(503, "the event broker is unavailable, retry later")
        response.headers["Retry-After"] = "2"
        return response

    # -- the shared steps of a route -----------------------------------------------------

    def caller(self) -> Caller:
        """Who asks; raises 401 when ``authorize`` says no."""
        user: str | None = None
        if self.authorize is not None:
            verdict = self.authorize(request)
            if not verdict:
                raise ChatInputError(401, "not authorized")
            user = verdict if isinstance(verdict, str) else None
        key = f"user:{user}" if user is not None else f"addr:{request.remote_addr}"
        return Caller(user, key)

    def start(
        self, messages: list[dict[str, Any]], caller: Caller, *,
        options: dict[str, Any] | None = None, chat_id: str | None = None,
        on_end: Callable[[], None] | None = None,
    ) -> str:
        """Start a generation within the caps (429 beyond them); returns its stream id."""
        caps = GenerationCaps.for_app(current_app)
        if not caps.acquire(caller.key):
            raise ChatInputError(
                429, "too many replies are being generated, retry later",
                retry_after=CAP_RETRY_AFTER,
            )

        def ended() -> None:
            caps.release(caller.key)
            if on_end is not None:
                on_end()

        stream_id = secrets.token_urlsafe(16)
        try:
            self.generations.start(stream_id, messages, caller.user, options=options,
                                   chat_id=chat_id, on_end=ended)
        except BaseException:
            caps.release(caller.key)
            raise
        caps.started += 1
        return stream_id

    def follow(
        self, stream_id: str, after: int, caller: Caller, framer: Framer | None = None,
    ) -> tuple[Follow, Mailbox]:
        """Follow a generation's log after ``after``; with a ``framer`` the returned
        follow's prelude and everything handed over later are in its protocol."""
        mailbox = runtime.current().new_mailbox(self.state().queue_size)
        target: Sink = mailbox if framer is None else FramingSink(mailbox, framer)
        follow = self.generations.follow(stream_id, after, target, caller.user)
        if framer is not None and follow.prelude:
            follow.prelude = framer.frame_many(follow.prelude)
        return follow, mailbox

    @staticmethod
    def respond(
        follow: Follow, mailbox: Mailbox, *, opening: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> Response:
        """The streaming response of one follower."""
        response = stream_response(
            mailbox, StreamOptions.for_app(current_app), prelude=opening + follow.prelude,
            on_close=(follow.stop,),
        )
        response.headers.update(headers or {})
        return response
