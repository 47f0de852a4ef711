"""The channel route: ``GET {SSE_URL_PREFIX}?channel=NAME[&channel=...][&last=N]``.

Replay after ``Last-Event-ID`` (or a reset), or without one the newest ``N`` events
(``last``), then live events; with ``SSE_PRESENCE`` an ``event: presence`` per channel
first. Several channels share one stream (``brokers/multichannel.py``); a stream of one
channel carries the broker's own ids and the same bytes for every subscriber.
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
from .wire.numbers import ascii_int

if TYPE_CHECKING:
    from .extension import SSEState

__all__ = ["channel_view", "check_access", "check_names"]

EXTENSION_KEY = "sse"  # app.extensions (the extension's state)
Subscribed = tuple[bytes, tuple[Callable[[], None], ...]]


def channel_view() -> Response:
    """Stream the channels the query names (``sse`` if none)."""
    state: SSEState = current_app.extensions[EXTENSION_KEY]
    channels = list(dict.fromkeys(request.args.getlist("channel"))) or ["sse"]
    problem = check_names(channels)
    if problem is None:
        newest, problem = _parse_last(request.args.getlist("last"), state.settings.history_size)
    if problem is not None:
        return json_error(problem, 400)
    denied = check_access(state, channels)
    if denied is not None:
        return denied
    # Counted before the subscribe, which may block (Redis): the cap holds however many
    # requests arrive at once.
    refusal = reserve_stream()
    if refusal is not None:
        return refusal
    concurrency = runtime.current()
    mailbox = concurrency.new_mailbox(state.settings.subscriber_queue)
    subscribe = _subscribe_one if len(channels) == 1 else _subscribe_many
    if last_event_id() is not None:
        newest = None  # a client that knows where it is resumes from there
    try:
        prelude, on_close = subscribe(state, channels, mailbox, newest)
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


def check_names(channels: list[str]) -> str | None:
    """What is wrong with the channel names of a request, or None."""
    if len(channels) > MAX_CHANNELS:
        return f"at most {MAX_CHANNELS} channels per stream"
    if not all(valid_channel(channel) for channel in channels):
        return "invalid channel: 1 to 128 characters from A-Z a-z 0-9 _ - . :"
    if sum(map(len, channels)) > MAX_NAMES_LENGTH:
        return f"channel names longer than {MAX_NAMES_LENGTH} characters in all"
    return None


def check_access(state: SSEState, channels: list[str]) -> Response | None:
    """The 401/403 for a request that may not read every one of ``channels`` (the
    subscribe token, then ``authorize`` per channel), or None."""
    denied = check_token(request.args.get("token"), channels)
    if denied is not None:
        return denied
    if state.authorize is not None:
        for channel in channels:
            if not state.authorize(channel):
                return json_error("not allowed to subscribe to this channel", 403)
    return None


def _parse_last(values: list[str], history_size: int) -> tuple[int | None, str | None]:
    """``?last=N``: (N, None), (None, None) when absent, or (None, the 400 message)."""
    if not values:
        return None, None
    if history_size < 1:
        return None, "last is not available: SSE_HISTORY_SIZE is 0 (no history is kept)"
    number = ascii_int(values[0], 10) if len(values) == 1 else None
    if number is None or not 1 <= number <= history_size:
        return None, f"last must be one whole number from 1 to {history_size}"
    return number, None


def _openings(state: SSEState, subscriptions: list[Subscription]) -> list[bytes]:
    """The presence event each subscription of a stream opens with (none without
    SSE_PRESENCE); from then on its sink gets the channel's changes."""
    if not state.settings.presence:
        return [b""] * len(subscriptions)
    presence = state.broker.presence
    presence.prime([s.channel for s in subscriptions])
    return [presence.opening(s.channel, s.sink) for s in subscriptions]


def _subscribe_one(
    state: SSEState, channels: list[str], mailbox: Mailbox, newest: int | None
) -> Subscribed:
    # A cursor (the id of a multi-channel stream: broker ids never hold "@") resumes this
    # channel from its own position in it, as the same channel would in a wider stream.
    position = parse_cursor(last_event_id(), channels)[channels[0]]
    subscription = state.broker.subscribe(channels[0], mailbox, position, newest)
    try:
        prelude = subscription.prelude + _openings(state, [subscription])[0]
    except BaseException:
        subscription.close()
        raise
    return prelude, (subscription.close,)


def _subscribe_many(
    state: SSEState, channels: list[str], mailbox: Mailbox, newest: int | None
) -> Subscribed:
    merge = ChannelMerge(mailbox, state.counters, limit=state.settings.subscriber_queue)
    positions = parse_cursor(last_event_id(), channels)
    subscriptions: list[Subscription] = []
    try:
        for channel in channels:
            subscriptions.append(
                state.broker.subscribe(channel, merge.tap(channel), positions[channel], newest)
            )
        openings = _openings(state, subscriptions)
        preludes = [(s.channel, s.prelude + opening, s.position)
                    for s, opening in zip(subscriptions, openings, strict=True)]
    except BaseException:
        for subscription in subscriptions:
            subscription.close()
        raise
    # where the client stands before each channel's prelude: where it said, or before
    # the newest events it is sent (``last``)
    starts = {s.channel: positions[s.channel] or s.origin for s in subscriptions}
    prelude = merge.start(preludes, starts)
    return prelude, tuple(s.close for s in subscriptions)
