"""The Vercel AI SDK "UI message stream" protocol (v1): ``useChat``, ``DefaultChatTransport``,
assistant-ui.

Routes (relative to the blueprint's ``url_prefix``; the AI SDK's default is ``/api/chat``):

* ``POST /`` with the body ``DefaultChatTransport`` sends (``id`` the chat id, ``messages``
  as UI messages with ``parts``, ``trigger``, ``messageId``; assistant-ui adds ``tools``):
  the reply as UI message chunks (``ai_sdk_stream.py``: text, reasoning, tools, data,
  sources, steps) and ``data: [DONE]``, with ``x-vercel-ai-ui-message-stream: v1``.
* ``GET /<chat_id>/stream`` (``reconnectToStream``, ``useChat({resume: true})``): the chat's
  active reply replayed from its start, then live; 204 when none is active.
* ``DELETE /<chat_id>/stream``: stop the active reply (204, or 404).

A chat has at most one active reply per caller: a new POST for the chat stops the one
before. The chat id points at the reply's generation through the store
(:meth:`set_alias`), so a resume works on any process that shares the store.

**Who may see a chat's reply.** Chat ids are chosen by the client and name the chat in
the resume and stop URLs, so without more a chat id would be a bearer secret: whoever
learns one could read the running reply (with the user's prompt), stop it or replace it.
A reply is therefore *bound* when it starts, by the request that starts it:

* to the user id ``authorize`` returned, if any (a user's chat ids are the user's, on
  every device);
* else to the ``sse_chat_client`` cookie the request carried: a random 128-bit value
  this blueprint sets (HttpOnly, SameSite=Lax, Path = the blueprint's prefix, Secure on
  https) on every response to a request that has none. Another browser (another value, or
  none) finds nothing under that chat id: 204 on resume, 404 on stop, and its POST
  starts a reply of its own beside the first;
* else (a client that keeps no cookies: Node's ``fetch``, curl, a server) to nothing, as
  before: any cookie-less request with the chat id finds it.

A request with the cookie also finds the unbound reply of its chat id when it has no
bound one (resume and stop only): a browser's very first POST carries no cookie yet, and
its reload must still resume that reply and its Stop still stop it. This grants nothing
new: a cookie-less request finds that reply anyway. A POST with the cookie never replaces
an unbound reply (it may be another, cookie-less client's).

A binding is the store's alias name for the chat (a digest of the binding and the chat
id) and the owner its generation carries, which every follow and cancel checks.

Both streaming responses carry ``x-resumable-stream-id`` (the chat id, URL-encoded),
which assistant-ui's ``AssistantChatTransport({resumable})`` stores to resume the reply
after a reload.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from flask import Blueprint, Response, current_app, request
from flask.blueprints import BlueprintSetupState

from ... import runtime
from ...runtime import CloseReason, Sink, hand_off
from ...stream.requests import reserve_stream
from ..backends import ChatBackend
from ..runner import OnFinish
from ..service import Caller, ChatAuthorize, GenerationRoutes
from ..store import FollowStatus
from ..validation import ChatInputError, encodable, read_json_body
from .ai_sdk_messages import request_tools, response_message_id, ui_messages
from .ai_sdk_stream import UIMessageFollower, UIMessageFramer

__all__ = ["COOKIE", "AISDKRoutes", "create_ai_sdk_blueprint"]

HEADERS = {"x-vercel-ai-ui-message-stream": "v1"}
RESUMABLE_STREAM_ID = "x-resumable-stream-id"  # assistant-ui's resume (see the docstring)
COOKIE = "sse_chat_client"
MAX_CHAT_ID = 200


class AISDKRoutes(GenerationRoutes):
    framer = UIMessageFramer()  # shared by every follower: one cached body per entry

    def add_routes(self, bp: Blueprint) -> None:
        # "/" without a redirect for the bare prefix: the SDK posts to "/api/chat".
        bp.add_url_rule("/", "send", self.send, methods=["POST"], strict_slashes=False)
        bp.add_url_rule("/<chat_id>/stream", "resume", self.resume, methods=["GET"])
        bp.add_url_rule("/<chat_id>/stream", "stop", self.stop, methods=["DELETE"])
        self.cookie = ClientCookie(bp)

    def send(self) -> Response:
        """Start the reply to a chat's messages and stream it."""
        caller = self.caller()
        limits = self.state().limits
        body = read_json_body(request, limits)
        chat_id = _chat_id(body.get("id"))
        messages = ui_messages(body.get("messages"), limits)
        options = {"tools": request_tools(body.get("tools"))}
        refusal = reserve_stream()
        if refusal is not None:
            return refusal
        # A new reply goes where this caller's bindings start; only a reply found there is
        # replaced (an unbound reply of a cookie-less client with the same id is not).
        binding = bindings(caller, self.cookie.value(), chat_id)[0]
        store = self.generations.store
        previous = store.alias(binding.alias)
        if previous is not None:
            self.generations.cancel(previous, wait=False)  # one active reply per chat
        stream_id = ""

        def ended() -> None:
            store.clear_alias(binding.alias, stream_id)

        stream_id = self.start(messages, Caller(binding.owner, caller.key), options=options,
                               chat_id=chat_id, on_end=ended)
        store.set_alias(binding.alias, stream_id)
        message_id = response_message_id(body.get("messages"), stream_id)
        return self._stream(stream_id, binding, message_id, chat_id) or Response(status=204)

    def resume(self, chat_id: str) -> Response:
        """The chat's active reply from its start, then live; 204 when none is active.

        The replay opens with the stream id as its message id, also for a reply that
        continued an earlier assistant message (after a client-side tool): ``useChat``
        then shows it as a message of its own instead of replacing the one it continues
        with only the continuation's parts (it resets the message it resumes into)."""
        caller = self.caller()
        for binding in bindings(caller, self.cookie.value(), _chat_id(chat_id)):
            stream_id = self.generations.store.alias(binding.alias)
            if stream_id is None:
                continue
            refusal = reserve_stream()
            if refusal is not None:
                return refusal
            response = self._stream(stream_id, binding, stream_id, chat_id)
            if response is not None:
                return response
        return Response(status=204)

    def stop(self, chat_id: str) -> Response:
        """Stop the chat's active reply: 204, or 404 when none is active."""
        caller = self.caller()
        for binding in bindings(caller, self.cookie.value(), _chat_id(chat_id)):
            stream_id = self.generations.store.alias(binding.alias)
            if stream_id is not None and self.generations.cancel(stream_id,
                                                                 owner=binding.owner):
                return Response(status=204)
        raise ChatInputError(404, "no active reply for this chat")

    def _stream(self, stream_id: str, binding: Binding, message_id: str,
                chat_id: str) -> Response | None:
        """The reply replayed from its start then live, framed for this one follower;
        None when it is over (a finished reply is not offered again to a GET)."""
        follower = self.framer.follower()
        mailbox = runtime.current().new_mailbox(self.state().queue_size)
        sink = FollowerSink(mailbox, follower)
        follow = self.generations.follow(stream_id, 0, sink, binding.owner)
        if follow.status is not FollowStatus.LIVE:
            return None
        if mailbox.reason is CloseReason.FINISHED and request.method == "GET":
            follow.stop()
            return None  # the log was complete already: it finished
        follow.prelude = sink.begin(follow.prelude)
        headers = {**HEADERS, RESUMABLE_STREAM_ID: quote(chat_id, safe="")}
        return self.respond(follow, mailbox, opening=follower.opening(message_id),
                            headers=headers)


def _chat_id(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_CHAT_ID:
        raise ChatInputError(400, f"id must be a chat id of 1 to {MAX_CHAT_ID} characters")
    if not encodable(value):
        raise ChatInputError(400, "id must be valid Unicode text (no lone surrogates)")
    return value


def create_ai_sdk_blueprint(
    backend: ChatBackend,
    *,
    name: str = "ai_chat",
    authorize: ChatAuthorize | None = None,
    stop_on_disconnect: bool = False,
    on_finish: OnFinish | None = None,
    import_name: str = __name__,
) -> Blueprint:
    """A blueprint speaking the AI SDK's UI message stream protocol (v1) for
    ``backend``, over the same resumable generations as :func:`create_chat_blueprint`
    (``authorize``, the caps, ``stop_on_disconnect`` and ``on_finish`` apply the same
    way; ``on_finish`` gets the chat id too).

    A chat's reply is bound to a user id from ``authorize``; without one, to the
    browser's ``sse_chat_client`` cookie (HttpOnly, SameSite=Lax, scoped to the
    blueprint's prefix), which the blueprint sets on its responses: another browser
    that learns the chat id can neither read, stop nor replace that reply. Requests
    without the cookie (clients that keep no cookies) share unbound replies by chat id.
    ``stop_on_disconnect=True`` stops a reply once its last client left (assistant-ui's
    Stop, or ``useChat`` without ``resume``); otherwise it runs on for a resume, and a
    Stop button must also send the DELETE."""
    return AISDKRoutes(
        backend, name=name, authorize=authorize, import_name=import_name,
        stop_on_disconnect=stop_on_disconnect, on_finish=on_finish,
    ).blueprint


# -- bindings: who may see a reply -------------------------------------------------------

_VALUE = re.compile(r"[0-9a-f]{32}")  # what this blueprint sets; anything else is no cookie
_PATHS_KEY = "flask_sse_stream.chat.ai_sdk_paths"


@dataclass(frozen=True)
class Binding:
    """Where one caller finds a chat's reply: the store's alias name, and the owner the
    reply's generation carries (None: unbound)."""

    alias: str
    owner: str | None


def bindings(caller: Caller, client: str | None, chat_id: str) -> list[Binding]:
    """Where ``caller`` (with the cookie value ``client``, if any) looks for the reply of
    ``chat_id``, in order; a new reply goes to the first."""
    if caller.user is not None:
        return [Binding(_alias(caller.user, chat_id), caller.user)]
    unbound = Binding(_alias(None, chat_id), None)
    if client is None:
        return [unbound]
    # a digest, not the cookie itself: the owner is stored (Redis) and logged
    owner = "client:" + hashlib.sha256(client.encode()).hexdigest()[:32]
    return [Binding(_alias(owner, chat_id), owner), unbound]


def _alias(owner: str | None, chat_id: str) -> str:
    """The store's name for a chat of ``owner`` (the same names as before bindings, for
    users and unbound replies, so replies running during an upgrade stay found)."""
    digest = hashlib.sha256(f"{owner or ''}\0{chat_id}".encode()).hexdigest()[:32]
    return f"ai-chat:{digest}"


class ClientCookie:
    """The ``sse_chat_client`` cookie of one blueprint: read it from the request, set it
    on every response of the blueprint to a request without a valid one."""

    def __init__(self, bp: Blueprint) -> None:
        bp.record(self._remember_prefix)
        bp.after_request(self._set)

    @staticmethod
    def value() -> str | None:
        """The request's cookie value; None when absent or not one this blueprint set."""
        value = request.cookies.get(COOKIE)
        return value if value is not None and _VALUE.fullmatch(value) else None

    @staticmethod
    def _remember_prefix(state: BlueprintSetupState) -> None:
        """The URL prefix of each registration (a blueprint may be mounted twice), by
        the name ``request.blueprint`` gives its requests."""
        name = ".".join(part for part in (state.name_prefix, state.name) if part)
        state.app.extensions.setdefault(_PATHS_KEY, {})[name] = state.url_prefix or ""

    @staticmethod
    def path() -> str:
        """The cookie's Path: where this registration of the blueprint is mounted, as
        the browser sees it (behind the WSGI script root)."""
        prefixes = current_app.extensions.get(_PATHS_KEY, {})
        prefix = prefixes.get(request.blueprint or "", "")
        return (request.script_root + prefix).rstrip("/") or "/"

    def _set(self, response: Response) -> Response:
        if self.value() is None:
            response.set_cookie(COOKIE, secrets.token_hex(16), path=self.path(),
                                secure=request.is_secure, httponly=True, samesite="Lax")
        return response


class FollowerSink:
    """What the log hands to one follower, framed by that follower, into the response's
    own mailbox (a write-only sink: the response reads its mailbox, never this).

    A follower frames entries in log order (an entry's frame depends on the one before).
    The store may hand over live entries before the follow's prelude is framed (the
    Redis store, while it reads the prelude); those are held raw until :meth:`begin`
    frames the prelude, then them."""

    __slots__ = ("_follower", "_held", "_lock", "inner")

    def __init__(self, inner: Sink, follower: UIMessageFollower) -> None:
        self.inner = inner
        self._follower = follower
        self._held: list[bytes] | None = []
        self._lock = threading.Lock()  # never held across a wait: no greenlet switch inside

    @property
    def reason(self) -> CloseReason | None:
        return self.inner.reason

    def offer(self, chunk: bytes) -> bool:
        if self._held is not None:
            with self._lock:
                if self._held is not None:
                    self._held.append(chunk)
                    return self.inner.reason is None
        return self.inner.offer(self._follower.frame_many(chunk))

    def close(self, reason: CloseReason) -> None:
        self.inner.close(reason)

    def begin(self, prelude: bytes) -> bytes:
        """Frame the follow's ``prelude`` (returned, for the response to send first), then
        pass on what was held; from here on entries are framed as they come."""
        with self._lock:
            framed = self._follower.frame_many(prelude)
            for chunk in self._held or ():
                if not hand_off(self.inner, self._follower.frame_many(chunk)):
                    break  # a full mailbox is cut (it reconnects and replays)
            self._held = None
        return framed
