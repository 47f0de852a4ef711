"""The channel route: ``GET {SSE_URL_PREFIX}?channel=NAME[&channel=...]``.

Replay after ``Last-Event-ID`` (or a reset), then live events. Several channels share one
stream (``brokers/multichannel.py``); a stream of one channel carries the broker's own ids
and the same bytes for every subscriber.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from flask import Response, current_app, request

from . import runtime
from .brokers import BrokerError, Subscription, valid_channel
from .brokers.multichannel import MAX_CHANNELS, MAX_NAMES_LENGTH, ChannelMerge
from .errors import json_error
from .runtime import CloseReason, Mailbox
from .stream.options import StreamOptions
from .stream.requests import last_event_id, refuse_stream, reserve_stream
from .stream.views import stream_response
from .tokens import check_token
from .wire.cursor import parse_cursor

if TYPE_CHECKING:
    from .extension import SSEState

__all__ = ["channel_view"]

EXTENSION_KEY = "sse"  # app.extensions (the extension's state)
Subscribed = tuple[bytes, tuple[Callable[[], None], ...]]


def channel_view() -> Response:
    """Stream the channels the query names (``sse`` if none)."""
    state: SSEState = current_app.extensions[EXTENSION_KEY]
    channels = list(dict.fromkeys(request.args.getlist("channel"))) or ["sse"]
    problem = _check_names(channels)
    if problem is not None:
        return json_error(problem, 400)
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
    concurrency = runtime.current()
    mailbox = concurrency.new_mailbox(state.settings.subscriber_queue)
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
        mailbox, StreamOptions.for_app(current_app), prelude=prelude, on_close=on_close,
        concurrency=concurrency,
    )


def _check_names(channels: list[str]) -> str | None:
    if len(channels) > MAX_CHANNELS:
        return f"at most {MAX_CHANNELS} channels per stream"
    if not all(valid_channel(channel) for channel in channels):
        return "invalid channel: 1 to 128 characters from A-Z a-z 0-9 _ - . :"
    if sum(map(len, channels)) > MAX_NAMES_LENGTH:
        return f"channel names longer than {MAX_NAMES_LENGTH} characters in all"
    return None


def _subscribe_one(state: SSEState, channels: list[str], mailbox: Mailbox) -> Subscribed:
    # A cursor (the id of a multi-channel stream: broker ids never hold "@") resumes this
    # channel from its own position in it, as the same channel would in a wider stream.
    position = parse_cursor(last_event_id(), channels)[channels[0]]
    subscription = state.broker.subscribe(channels[0], mailbox, position)
    return subscription.prelude, (subscription.close,)


def _subscribe_many(state: SSEState, channels: list[str], mailbox: Mailbox) -> Subscribed:
    merge = ChannelMerge(mailbox, state.counters, limit=state.settings.subscriber_queue)
    positions = parse_cursor(last_event_id(), channels)
    subscriptions: list[Subscription] = []
    try:
        for channel in channels:
            subscriptions.append(
                state.broker.subscribe(channel, merge.tap(channel), positions[channel])
            )
    except BaseException:
        for subscription in subscriptions:
            subscription.close()
        raise
    prelude = merge.start([(s.channel, s.prelude, s.position) for s in subscriptions], positions)
    return prelude, tuple(s.close for s in subscriptions)
