"""``redis://``: channels as Redis Streams, shared by every worker and host.

* ``publish`` is one ``XADD ... MAXLEN ~ SSE_HISTORY_SIZE``: Redis assigns the id, and the
  stream is the history that replay reads (``XRANGE``), on any host.
* Each process runs one reader per channel that has local subscribers: a single blocking
  ``XREAD`` loop on one connection, whatever the number of clients. It encodes each entry
  once and hands the same bytes to every local subscriber.
* A subscriber that resumes from ``Last-Event-ID`` joins the reader first (live entries are
  held back), then reads the history after its id, then gets the held-back entries newer
  than the history's end: no gap and no duplicate at the seam.
* If Redis goes away the readers keep their subscribers (heartbeats continue) and retry
  with back-off, continuing from the last id they delivered; ``publish`` raises
  ``BrokerError``.

The ``redis`` package is imported here only, so it is needed only with this broker.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from typing import Any

import redis

from ..concurrency import current as current_concurrency
from ..event import Event, data_text
from ..mailbox import Mailbox
from .base import Broker, BrokerError, Subscription, reset_event

__all__ = ["RedisBroker"]

log = logging.getLogger("flask_sse_stream.redis")

BLOCK_MS = 5000  # how long one XREAD waits; also bounds how long an idle reader lingers
READ_COUNT = 512  # entries per XREAD
MAX_BACKOFF = 2.0

_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)


def _parse_id(entry_id: str) -> tuple[int, int] | None:
    ms, _, seq = entry_id.partition("-")
    if not (ms.isdigit() and seq.isdigit() and len(ms) < 20 and len(seq) < 20):
        return None
    return int(ms), int(seq)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _encode_entry(entry_id: str, fields: dict[Any, Any]) -> bytes:
    get = fields.get
    data = get(b"d")
    event = get(b"e")
    retry = get(b"r")
    return Event(
        None if data is None else _text(data),
        event=None if event is None else _text(event),
        id=entry_id,
        retry=None if retry is None else int(retry),
    ).encode()


class _RedisSubscription(Subscription):
    __slots__ = ("held",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # While replay runs, live entries wait here as (id, bytes); None once live.
        self.held: list[tuple[tuple[int, int], bytes]] | None = None


class _ChannelReader:
    """The one XREAD loop of this process for one channel."""

    def __init__(self, broker: RedisBroker, channel: str, start_id: str) -> None:
        self.broker = broker
        self.channel = channel
        self.key = broker.key(channel)
        self.last_id = start_id
        self.subscribers: set[_RedisSubscription] = set()
        self.running = True

    def run(self) -> None:
        broker = self.broker
        backoff = 0.1
        try:
            while self.running:
                if not self.subscribers:
                    with broker.lock:
                        if not self.subscribers:  # nobody joined meanwhile: retire
                            broker.readers.pop(self.channel, None)
                            return
                try:
                    response = broker.reader_client.xread(
                        {self.key: self.last_id}, count=READ_COUNT, block=BLOCK_MS
                    )
                    backoff = 0.1
                except _ERRORS as exc:
                    log.warning(
                        "redis reader for %r: %s; retrying in %.1fs", self.channel, exc, backoff
                    )
                    time.sleep(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)
                    continue
                for _key, entries in response or ():
                    self.dispatch(entries)
        finally:
            with broker.lock:
                if broker.readers.get(self.channel) is self:
                    del broker.readers[self.channel]

    def dispatch(self, entries: list[tuple[Any, dict[Any, Any]]]) -> None:
        for raw_id, fields in entries:
            entry_id = _text(raw_id)
            self.last_id = entry_id
            chunk = _encode_entry(entry_id, fields)
            with self.broker.lock:
                subscribers = list(self.subscribers)
                held_by = [sub for sub in subscribers if sub.held is not None]
                for sub in held_by:
                    assert sub.held is not None
                    sub.held.append((_parse_id(entry_id) or (0, 0), chunk))
            for sub in subscribers:
                if sub.held is None:
                    sub.deliver(chunk)


class RedisBroker(Broker):
    def __init__(
        self,
        url: str,
        *,
        history_size: int = 1000,
        key_prefix: str = "sse:",
        connect_timeout: float = 2.0,
        timeout: float = 5.0,
    ) -> None:
        self.history_size = history_size
        self.key_prefix = key_prefix
        # Any: redis-py's own hints change between releases (and with decode_responses)
        self.client: Any = redis.Redis.from_url(
            url, socket_connect_timeout=connect_timeout, socket_timeout=timeout
        )
        # Readers block in XREAD for BLOCK_MS: their socket timeout must be longer.
        self.reader_client: Any = redis.Redis.from_url(
            url,
            socket_connect_timeout=connect_timeout,
            socket_timeout=BLOCK_MS / 1000 + timeout,
        )
        self.readers: dict[str, _ChannelReader] = {}
        self.lock = threading.Lock()

    def key(self, channel: str) -> str:
        return self.key_prefix + channel

    def publish(
        self, channel: str, data: Any, event: str | None = None, retry: int | None = None
    ) -> str:
        Event(None, event=event, retry=retry)  # validates the fields before they are stored
        fields: dict[str, str | int] = {}
        if data is not None:
            fields["d"] = data_text(data)
        if event is not None:
            fields["e"] = event
        if retry is not None:
            fields["r"] = retry
        if not fields:
            fields["_"] = ""  # an entry needs a field; this one encodes to an id-only event
        try:
            entry_id = self.client.xadd(
                self.key(channel), fields, maxlen=max(self.history_size, 1), approximate=True
            )
        except _ERRORS as exc:
            raise BrokerError(f"redis unavailable: {exc}") from exc
        return _text(entry_id)

    def _reader_for(self, channel: str) -> _ChannelReader:
        """The channel's running reader, started (from the stream's current end) if none."""
        with self.lock:
            reader = self.readers.get(channel)
            if reader is not None and reader.running:
                return reader
        try:
            last = self.client.xrevrange(self.key(channel), count=1)
        except _ERRORS as exc:
            raise BrokerError(f"redis unavailable: {exc}") from exc
        start_id = _text(last[0][0]) if last else "0-0"
        with self.lock:
            reader = self.readers.get(channel)
            if reader is not None and reader.running:
                return reader  # another request started one while we asked Redis
            reader = self.readers[channel] = _ChannelReader(self, channel, start_id)
        current_concurrency().spawn(reader.run, contextvars.Context())
        return reader

    def subscribe(
        self, channel: str, mailbox: Mailbox, last_event_id: str | None = None
    ) -> Subscription:
        reader = self._reader_for(channel)
        sub = _RedisSubscription(channel, mailbox, self._unsubscribe)
        if last_event_id is not None:
            sub.held = []
        with self.lock:
            reader.subscribers.add(sub)
        if last_event_id is None:
            return sub
        try:
            sub.prelude, last_sent = self._replay(channel, last_event_id)
        except BaseException:
            self._unsubscribe(sub)
            raise
        with self.lock:
            held, sub.held = sub.held or [], None
            for entry_id, chunk in held:
                if last_sent is None or entry_id > last_sent:
                    sub.deliver(chunk)
        return sub

    def _replay(self, channel: str, last_event_id: str) -> tuple[bytes, tuple[int, int] | None]:
        """The prelude after ``last_event_id`` and the id of its last event."""
        position = _parse_id(last_event_id)
        start = last_event_id if position is not None else "-"
        try:
            entries = self.client.xrange(
                self.key(channel), min=start, max="+", count=self.history_size + 1
            )
        except _ERRORS as exc:
            raise BrokerError(f"redis unavailable: {exc}") from exc
        prelude = b""
        if position is None:
            prelude = reset_event(last_event_id, "unknown event id")
        elif entries and _text(entries[0][0]) == last_event_id:
            entries = entries[1:]
        else:
            why = "unknown event id" if not entries else "event id older than the history"
            prelude = reset_event(last_event_id, why)
        chunks = [_encode_entry(_text(raw_id), fields) for raw_id, fields in entries]
        last_sent = _parse_id(_text(entries[-1][0])) if entries else position
        return prelude + b"".join(chunks), last_sent

    def _unsubscribe(self, sub: Subscription) -> None:
        with self.lock:
            reader = self.readers.get(sub.channel)
            if reader is not None:
                reader.subscribers.discard(sub)

    def subscriber_counts(self) -> dict[str, int]:
        with self.lock:
            return {name: len(r.subscribers) for name, r in self.readers.items() if r.subscribers}

    def close(self) -> None:
        with self.lock:
            for reader in self.readers.values():
                reader.running = False
        self.client.close()
        self.reader_client.close()
