"""``flask sse ...``: publish to a channel and watch one, through the app's own broker.

    flask --app app sse publish news '{"text": "hi"}' --event note     # prints the id
    flask --app app sse tail news --last-event-id 1732000000000-0      # Ctrl-C ends it

With a Redis broker this reaches (and shows) what every worker and host sharing it sees,
which is how to check a deployment from a shell. With the memory broker only this CLI
process is reached, which is rarely what you want: the command says so on stderr.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from flask import current_app
from flask.cli import AppGroup

from . import runtime
from .brokers import Broker, BrokerError, valid_channel
from .runtime import END
from .settings import settings_for
from .wire.parse import EventParser

__all__ = ["sse_cli"]

sse_cli = AppGroup("sse", help="Publish to and watch Server-Sent Events channels.")

EXTENSION_KEY = "sse"  # app.extensions: the SSE extension's state (see channels.py)


def _broker() -> Broker:
    state = current_app.extensions.get(EXTENSION_KEY)
    if state is None:
        raise click.ClickException("SSE is not set up on this app: call SSE(app) first")
    if settings_for(current_app).broker_kind == "memory":
        click.echo(
            "note: SSE_BROKER_URL is memory://, so only this process is reached; "
            "use a redis:// broker to reach the running servers",
            err=True,
        )
    return state.broker  # type: ignore[no-any-return]


def _channel(value: str) -> str:
    if not valid_channel(value):
        raise click.BadParameter("1 to 128 characters from A-Z a-z 0-9 _ - . :")
    return value


def _payload(text: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        return text
    # JSON null would be "no data field": an id-only event no client dispatches
    return text.strip() if value is None else value


@sse_cli.command("publish")
@click.argument("channel", callback=lambda _ctx, _param, value: _channel(value))
@click.argument("data")
@click.option("--event", "event", default=None, help="event type (default: message)")
def publish_command(channel: str, data: str, event: str | None) -> None:
    """Publish DATA (JSON if it parses, else text) to CHANNEL; print the event's id."""
    broker = _broker()
    try:
        event_id = broker.publish(channel, _payload(data), event=event)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--event'") from None
    except BrokerError as exc:
        raise click.ClickException(f"broker unavailable: {exc}") from None
    click.echo(event_id)


@sse_cli.command("tail")
@click.argument("channel", callback=lambda _ctx, _param, value: _channel(value))
@click.option("--last-event-id", default=None, help="replay the events after this id first")
@click.option("--count", type=click.IntRange(min=1), default=None, help="exit after N events")
def tail_command(channel: str, last_event_id: str | None, count: int | None) -> None:
    """Print CHANNEL's events as they arrive, in wire form (Ctrl-C ends it)."""
    broker = _broker()
    mailbox = runtime.current().new_mailbox(settings_for(current_app).subscriber_queue)
    try:
        subscription = broker.subscribe(channel, mailbox, last_event_id)
    except BrokerError as exc:
        raise click.ClickException(f"broker unavailable: {exc}") from None
    parser = EventParser()
    seen = 0

    def show(chunk: bytes) -> bool:
        nonlocal seen
        for event in parser.feed(chunk):
            click.echo(event.encode().decode("utf-8"), nl=False)
            seen += 1
            if count is not None and seen >= count:
                return True
        sys.stdout.flush()
        return False

    try:
        if show(subscription.prelude):
            return
        while True:
            chunks = mailbox.take(1.0) or []
            if any(show(chunk) for chunk in chunks if chunk is not END):
                return
            if mailbox.reason is not None or (chunks and chunks[-1] is END):
                reason = mailbox.reason.value if mailbox.reason else "finished"
                raise click.ClickException(
                    f"subscription ended ({reason}); resume with --last-event-id"
                )
    except KeyboardInterrupt:
        pass
    finally:
        subscription.close()
