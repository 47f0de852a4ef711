"""``redis://`` (and ``redis+cluster://``, ``redis+sentinel://``): channels as Redis
Streams, shared by every worker and host.

* ``publish`` is one ``XADD ... MAXLEN ~ SSE_HISTORY_SIZE``: Redis assigns the id, and the
  stream is the history that replay reads, on any host.
* Live events come from the process's one reader (``redis/reader.py``): a single blocking
  ``XREAD`` over every channel (and chat generation) with local subscribers, on one
  connection whatever the number of channels or clients (in a cluster: one doorbell
  connection per primary). Each batch is encoded once per channel and handed to every
  local subscriber as one chunk.
* A subscriber that resumes from ``Last-Event-ID`` joins the reader first (live entries are
  held back), replays the history after its id (paged to the end), then gets the held-back
  entries newer than the replay's end: no gap and no duplicate at the seam.
* When the position a replay or the reader continues from was trimmed away, the
  subscriber gets ``event: reset`` first: nothing is skipped in silence.
* If Redis goes away the reader keeps its subscribers (heartbeats continue) and retries
  with back-off; after ``redis.reader.LOST_AFTER`` seconds their streams end with a
  reconnect hint, and they replay once Redis is back. ``publish`` raises ``BrokerError``.
"""

from __future__ import annotations

from typing import Any

from ..metrics import Counters
from ..redis.ids import text
from ..redis.log import RedisLog
from ..redis.presence import RedisCensus
from ..redis.reader import Follower
from ..redis.recent import newest as newest_entries
from ..runtime import Sink
from ..wire.event import Event, data_text, encode_message
from .base import Broker, Subscription, reset_event
from .presence import Presence

__all__ = ["RedisBroker"]


def _encode_entry(entry_id: str, fields: dict[Any, Any]) -> bytes:
    get = fields.get
    data = get(b"d")
    event = get(b"e")
    retry = get(b"r")
    data_value = None if data is None else text(data)
    event_name = None if event is None else text(event)
    if retry is None:
        return encode_message(data_value, event_name, entry_id)
    return Event(data_value, event=event_name, id=entry_id, retry=int(retry)).encode()


class ChannelCodec:
    """A channel's entries as SSE events whose id is the entry id; a gap is a reset."""

    __slots__ = ()

    def start(self, fields: dict[Any, Any] | None) -> None:
        pass

    def entry(self, entry_id: str, fields: dict[Any, Any]) -> tuple[bytes, bool]:
        return _encode_entry(entry_id, fields), False

    def gap(self, last_id: str) -> tuple[bytes, bool]:
        return reset_event(last_id, "events were lost before this server read them"), False


class _RedisSubscription(Subscription):
    __slots__ = ("follower",)

    def __init__(self, *args: Any, follower: Follower, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.follower = follower


class RedisBroker(Broker):
    def __init__(
        self,
        url: str,
        *,
        history_size: int = 1000,
        key_prefix: str = "sse:",
        connect_timeout: float = 2.0,
        timeout: float = 5.0,
        counters: Counters | None = None,
        wait_replicas: int = 0,
        wait_timeout: float = 0.5,
    ) -> None:
        self.counters = Counters() if counters is None else counters
        # SSE_REDIS_WAIT_REPLICAS: a publish succeeds once that many replicas have it
        self.wait = (wait_replicas, wait_timeout) if wait_replicas > 0 else None
        self.history_size = history_size
        self.maxlen = max(history_size, 1)
        self.key_prefix = key_prefix
        self.log = RedisLog.open(url, connect_timeout=connect_timeout, timeout=timeout)
        self.presence = Presence(RedisCensus(self.log, key_prefix))

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
        entry_id = self.log.append(self.key(channel), fields, maxlen=self.maxlen, wait=self.wait)
        self.counters.published += 1
        return entry_id

    def follow(
        self, channel: str, sink: Sink, last_event_id: str | None = None,
        newest: int | None = None,
    ) -> tuple[Follower, bytes, str | None]:
        """Follow one channel into ``sink``: the follower (``self.log.reader.leave`` it
        when done), the prelude to send first (a reset, then the replay; or the newest
        entries) and, for the newest, the id before them (see ``Subscription.origin``)."""
        reader = self.log.reader
        key = self.key(channel)
        replaying = last_event_id is not None or bool(newest)
        cursor = Follower(sink, replaying=replaying, counters=self.counters)
        reader.join(key, cursor, ChannelCodec, self.maxlen)
        if last_event_id is None:
            if not newest:
                return cursor, b"", None
            return self._newest(cursor, key, newest)
        try:
            replay = self.log.replay(key, last_event_id)
        except BaseException:
            reader.leave(cursor)
            raise
        prelude = b"".join(_encode_entry(entry_id, fields) for entry_id, fields in replay.entries)
        self.counters.resumed += 1
        if replay.reset is not None:
            self.counters.resets += 1
            prelude = reset_event(last_event_id, replay.reset) + prelude
        reader.go_live(cursor, replay.end)
        if replay.end is not None:
            cursor.position = replay.end
        return cursor, prelude, None

    def _newest(self, cursor: Follower, key: str, count: int) -> tuple[Follower, bytes, str]:
        """The same seam as a replay's: the cursor joined first (live entries held), the
        newest entries are read, and only held entries after them are handed over."""
        reader = self.log.reader
        try:
            entries, before = newest_entries(self.log, key, count)
        except BaseException:
            reader.leave(cursor)
            raise
        end = entries[-1][0] if entries else None
        reader.go_live(cursor, end)
        if end is not None:
            cursor.position = end
        return cursor, b"".join(_encode_entry(i, fields) for i, fields in entries), before

    def subscribe(
        self, channel: str, sink: Sink, last_event_id: str | None = None,
        newest: int | None = None,
    ) -> Subscription:
        follower, prelude, origin = self.follow(channel, sink, last_event_id, newest)
        sub = _RedisSubscription(
            channel, sink, self._unsubscribe, prelude, self.counters, follower=follower
        )
        sub.position = follower.position
        sub.origin = origin
        self.presence.join(channel, sink)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        assert isinstance(sub, _RedisSubscription)
        self.presence.leave(sub.channel, sub.sink)
        self.log.reader.leave(sub.follower)

    def subscriber_counts(self) -> dict[str, int]:
        return self.log.reader.follower_counts(self.key_prefix, ChannelCodec)

    def close(self) -> None:
        self.log.release()

