"""The ``SSE`` Flask extension: config, the broker, ``publish``, the channel and presence
routes, ``presence``, stats."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app

from .brokers import Broker, create_broker, valid_channel
from .channels import EXTENSION_KEY, channel_view
from .cli import sse_cli
from .metrics import CHAT_CAPS_KEY, Counters
from .presence import presence_view
from .settings import Settings, settings_for
from .stream.registry import StreamRegistry, registry_for
from .tokens import init_tokens, make_token

__all__ = ["SSE", "ChannelAuthorize", "SSEState"]

ChannelAuthorize = Callable[[str], bool]


@dataclass
class SSEState:
    """What ``SSE`` keeps per app, in ``app.extensions["sse"]``."""

    broker: Broker
    registry: StreamRegistry
    authorize: ChannelAuthorize | None
    settings: Settings
    counters: Counters  # the broker's: published, delivered, ... (see metrics.py)


class SSE:
    """Server-Sent Events for a Flask app: ``SSE(app)`` or ``sse = SSE(); sse.init_app(app)``.

    One instance can serve several apps; each app's state (its broker, its open streams)
    lives in ``app.extensions["sse"]``. ``authorize(channel) -> bool`` is called in the
    request context before a client subscribes to (or replays) a channel.
    """

    def __init__(
        self, app: Flask | None = None, *, authorize: ChannelAuthorize | None = None
    ) -> None:
        self.authorize = authorize
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Resolve and check the app's config (``ValueError`` naming a bad key), make its
        broker and mount the channel route."""
        settings = settings_for(app, reload=True)
        init_tokens(app)
        counters = Counters()
        broker = create_broker(
            settings.broker_url, history_size=settings.history_size, counters=counters,
            wait_replicas=settings.redis_wait_replicas, wait_timeout=settings.redis_wait_timeout,
        )
        broker.presence.events = settings.presence
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
            app.add_url_rule(prefix.rstrip("/") + "/presence", endpoint="sse.presence",
                             view_func=presence_view)
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

    def presence(self, channel: str) -> int:
        """The streams subscribed to ``channel`` now, in every process and host sharing
        the broker (``memory://``: this process). A stream that ends stops counting at
        once in its own process; one of a process that died, within 30 s. Needs an app
        context; raises ``ValueError`` for a bad channel and ``BrokerError`` if the
        broker is unreachable."""
        if not valid_channel(channel):
            raise ValueError(f"invalid channel name {channel!r}")
        return self._state().broker.presence_count(channel)

    def subscribe_token(self, channels: list[str], expires_in: float = 300) -> str:
        """A signed token (app's ``SECRET_KEY``) letting its holder read ``channels`` for
        ``expires_in`` seconds, for ``?token=`` when ``SSE_SUBSCRIBE_TOKENS`` is on."""
        return make_token(current_app, channels, expires_in)

    def stats(self) -> dict[str, Any]:
        """Open streams (all SSE responses of this app in this process), local
        subscribers per channel, and this process's cumulative counters: ``published``,
        ``delivered``, ``resumed``, ``resets``, ``overflow_disconnects`` (what each
        counts: ``metrics.py``), and the chat blueprints' generations."""
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
