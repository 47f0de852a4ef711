"""The ``SSE`` Flask extension: config, the broker, ``publish``, the channel route, stats."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, current_app, jsonify, request

from .brokers import Broker, BrokerError, Subscription, create_broker, valid_channel
from .cli import sse_cli
from .concurrency import current as current_concurrency
from .gunicorn import check_server
from .mailbox import CloseReason, Mailbox, new_mailbox
from .metrics import CHAT_CAPS_KEY, Counters
from .multichannel import MAX_CHANNELS, MAX_NAMES_LENGTH, Cursor, parse_cursor
from .registry import StreamRegistry
from .response import SETTINGS_KEY as DEFAULT_STREAM_SETTINGS_KEY
from .response import (
    StreamSettings,
    last_event_id,
    refuse_stream,
    registry_for,
    reserve_stream,
    stream_response,
)
from .settings import Settings, settings_for
from .tokens import check_token, init_tokens, make_token

__all__ = ["SSE"]

EXTENSION_KEY = "sse"
Authorize = Callable[[str], bool]


@dataclass
class SSEState:
    """What ``SSE`` keeps per app, in ``app.extensions["sse"]``."""

    broker: Broker
    registry: StreamRegistry
    authorize: Authorize | None
    settings: Settings
    counters: Counters  # the broker's: published, delivered, ... (see .metrics)

    @property
    def subscriber_queue(self) -> int:
        return self.settings.subscriber_queue


def json_error(message: str, status: int, **headers: str) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    response.headers.update(headers)
    return response


class SSE:
    """Server-Sent Events for a Flask app: ``SSE(app)`` or ``sse = SSE(); sse.init_app(app)``.

    One instance can serve several apps; each app's state (its broker, its open streams)
    lives in ``app.extensions["sse"]``. ``authorize(channel) -> bool`` is called in the
    request context before a client subscribes to (or replays) a channel.
    """

    def __init__(self, app: Flask | None = None, *, authorize: Authorize | None = None) -> None:
        self.authorize = authorize
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Resolve and check the app's config (``ValueError`` naming a bad key), make its
        broker and mount the channel route."""
        settings = settings_for(app, reload=True)
        app.extensions.pop(DEFAULT_STREAM_SETTINGS_KEY, None)  # made from the old config
        init_tokens(app)
        counters = Counters()
        broker = create_broker(
            settings.broker_url, history_size=settings.history_size, counters=counters
        )
        check_server(broker)  # warns about memory:// under several gunicorn workers, h2
        app.extensions[EXTENSION_KEY] = SSEState(
            broker=broker,
            registry=registry_for(app),
            authorize=self.authorize,
            settings=settings,
            counters=counters,
        )
        prefix = settings.url_prefix
        if prefix:
            app.add_url_rule(prefix, endpoint="sse.channel", view_func=channel_view)
        app.cli.add_command(sse_cli)

    @staticmethod
    def _state() -> SSEState:
        try:
            return current_app.extensions[EXTENSION_KEY]  # type: ignore[no-any-return]
        except KeyError:
            raise RuntimeError("SSE is not set up on this app: call SSE(app) first") from None

    def publish(
        self, data: Any, channel: str = "sse", event: str | None = None, retry: int | None = None
    ) -> str:
        """Send ``data`` to every subscriber of ``channel`` (in every worker and host that
        shares the broker); returns the id given to the event. Needs an app context.
        Raises ``ValueError`` for a bad channel or field and ``BrokerError`` if the broker
        is unreachable."""
        if not valid_channel(channel):
            raise ValueError(f"invalid channel name {channel!r}")
        return self._state().broker.publish(channel, data, event=event, retry=retry)

    def subscribe_token(self, channels: list[str], expires_in: float = 300) -> str:
        """A signed token (app's ``SECRET_KEY``) letting its holder read ``channels`` for
        ``expires_in`` seconds, for ``?token=`` when ``SSE_SUBSCRIBE_TOKENS`` is on."""
        return make_token(current_app, channels, expires_in)

    def stats(self) -> dict[str, Any]:
        """Open streams (all SSE responses of this app in this process), local
        subscribers per channel, and this process's cumulative counters: ``published``,
        ``delivered``, ``resumed``, ``resets``, ``overflow_disconnects`` (what each counts:
        :mod:`flask_sse_stream.metrics`)."""
        state = self._state()
        caps = current_app.extensions.get(CHAT_CAPS_KEY)  # the chat blueprints', if any
        return {
            "open_streams": len(state.registry),
            "subscribers": state.broker.subscriber_counts(),
            **state.counters.as_dict(),
            "chat": {
                "started": getattr(caps, "started", 0),
                "running": getattr(caps, "running", 0),
            },
        }


def channel_view() -> Response:
    """``GET {SSE_URL_PREFIX}?channel=NAME[&channel=...]``: replay after Last-Event-ID,
    then live. Several channels share one stream (see :mod:`.multichannel`)."""
    state: SSEState = current_app.extensions[EXTENSION_KEY]
    channels = list(dict.fromkeys(request.args.getlist("channel"))) or ["sse"]
    if len(channels) > MAX_CHANNELS:
        return json_error(f"at most {MAX_CHANNELS} channels per stream", 400)
    if not all(valid_channel(channel) for channel in channels):
        return json_error("invalid channel: 1 to 128 characters from A-Z a-z 0-9 _ - . :", 400)
    if sum(map(len, channels)) > MAX_NAMES_LENGTH:
        return json_error(f"channel names longer than {MAX_NAMES_LENGTH} characters in all", 400)
    denied = check_token(request.args.get("token"), channels)
    if denied is not None:
        return denied
    if state.authorize is not None:
        for channel in channels:
            if not state.authorize(channel):
                return json_error("not allowed to subscribe to this channel", 403)
    # Counted before the subscribe, which may block (Redis): the cap holds however many
    # requests arrive at once.
    refusal = reserve_stream()
    if refusal is not None:
        return refusal
    concurrency = current_concurrency()
    mailbox = new_mailbox(concurrency, state.settings.subscriber_queue)
    subscribe = _subscribe_one if len(channels) == 1 else _subscribe_many
    try:
        prelude, on_close = subscribe(state, channels, mailbox)
    except BrokerError as exc:
        # A 503 would make EventSource give up for good: it gets a 200 that ends at once
        # with a retry: hint, and comes back (and replays) once the broker is back.
        current_app.logger.warning("SSE subscribe to %r failed: %s", channels, exc)
        mailbox.close(CloseReason.BROKER_LOST)
        return refuse_stream("the event broker is unavailable, retry later")
    return stream_response(
        mailbox, StreamSettings.default(), prelude=prelude, on_close=on_close,
        concurrency=concurrency,
    )


Subscribed = tuple[bytes, tuple[Callable[[], None], ...]]


def _subscribe_one(state: SSEState, channels: list[str], mailbox: Mailbox) -> Subscribed:
    # A cursor (the id of a multi-channel stream: broker ids never hold "@") resumes this
    # channel from its own position in it, as the same channel would in a wider stream.
    position = parse_cursor(last_event_id(), channels)[channels[0]]
    subscription = state.broker.subscribe(channels[0], mailbox, position)
    return subscription.prelude, (subscription.close,)


def _subscribe_many(state: SSEState, channels: list[str], mailbox: Mailbox) -> Subscribed:
    cursor = Cursor(mailbox, state.counters, limit=state.subscriber_queue)
    positions = parse_cursor(last_event_id(), channels)
    subscriptions: list[Subscription] = []
    try:
        for channel in channels:
            subscriptions.append(
                state.broker.subscribe(channel, cursor.tap(channel), positions[channel])
            )
    except BaseException:
        for subscription in subscriptions:
            subscription.close()
        raise
    prelude = cursor.start([(s.channel, s.prelude, s.position) for s in subscriptions], positions)
    return prelude, tuple(s.close for s in subscriptions)
