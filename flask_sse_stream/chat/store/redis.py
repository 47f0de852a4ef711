"""Generation logs on Redis Streams, so a reply can be resumed on any worker or host.

The process running a generation keeps a local log (its own followers are served from
memory, with no Redis round trip) and mirrors every encoded entry into the Redis stream
``<prefix><stream_id>`` (fields: ``q`` the seq, ``c`` the SSE bytes, ``f`` on the close
event). A client that resumes on another process replays that stream and then follows it
through the process's one Redis reader (``redis/reader.py``, shared with the channel
broker), however many generations and clients it follows. Cancelling from another process
is one message on one pub/sub channel, read by one listener per process, which cancels
only generations that process runs. Finished logs expire after ``retention``.

In a Redis Cluster a generation's keys (its stream, ``:alive``, ``:listen``) carry its
stream id as a hash tag, ``<prefix>{<stream_id>}``, so they share a slot: one node, one
round trip per pipeline. Generations spread over the primaries like channels do.
Without a cluster the keys keep their untagged names (those of the second release).
Cancel requests are a plain ``PUBLISH``, which a cluster broadcasts to every node: the
listener subscribes on any one of them.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterable
from typing import Any

from ... import runtime
from ...errors import BrokerError
from ...redis.backoff import Backoff
from ...redis.errors import ERRORS, mapped_errors
from ...redis.ids import text
from ...redis.log import RedisLog
from ...redis.reader import Follower
from ...runtime import CloseReason, Sink
from ..entries import encode_close
from ..parts import Part
from .base import Follow, FollowStatus, GenerationStore
from .memory import MemoryGenerationStore

__all__ = ["RedisGenerationStore"]

log = logging.getLogger("flask_sse_stream.chat")

# KEYS[1] = the alias, ARGV[1] = the generation that ends
_CLEAR_IF_SAME = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
RUNNING_TTL = 3600  # a generation whose process died without finishing expires after this
ALIVE_TTL = 10  # seconds: how soon other hosts notice that the owner process died
ALIVE_EVERY = 3


def _contiguous(parsed: list[tuple[int, bytes, bool]], after: int) -> bool:
    """Whether the log holds every seq after ``after`` up to its last one."""
    seqs = sorted(seq for seq, _c, _f in parsed if seq > after)
    return seqs == list(range(after + 1, after + 1 + len(seqs)))


def _first_of_each(entries: Iterable[tuple[int, bytes, bool]]) -> list[tuple[int, bytes, bool]]:
    """The entries with each seq once (a retried finish writes its close entry twice)."""
    seen: set[int] = set()
    kept = []
    for entry in entries:
        if entry[0] not in seen:
            seen.add(entry[0])
            kept.append(entry)
    return kept


def _fields(fields: dict[bytes, bytes]) -> tuple[int, bytes, bool]:
    return int(fields.get(b"q", b"0")), fields.get(b"c", b""), b"f" in fields


class ChatCodec:
    """A generation's mirrored entries (already encoded by the owner); a gap ends the
    reply for its followers with ``finish_reason: "error"``.

    The owner numbers its entries 1, 2, ... in its own memory, so a follower can tell a
    hole the reader cannot see: after a failover that lost entries nobody here had read
    yet, the owner writes on with the next seq, and the seq jumps."""

    __slots__ = ("seq", "stream_id")

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        self.seq: int | None = None  # the last entry's seq (None: not known yet)

    def start(self, fields: dict[Any, Any] | None) -> None:
        if fields is not None:
            self.seq = _fields(fields)[0]

    def entry(self, entry_id: str, fields: dict[Any, Any]) -> tuple[bytes, bool]:
        seq, chunk, final = _fields(fields)
        if self.seq is not None and seq > self.seq + 1:
            return self.gap(entry_id)  # entries between were lost
        self.seq = seq
        return chunk, final

    def gap(self, last_id: str) -> tuple[bytes, bool]:
        close = {"finish_reason": "error", "error": "part of this reply was lost"}
        return encode_close(self.stream_id, (self.seq or 0) + 1, close), True


class RedisGenerationStore(GenerationStore):
    def __init__(
        self, url: str, *, retention: float = 300.0, listen_ttl: float = 30.0,
        key_prefix: str = "sse-chat:",
    ) -> None:
        self.retention = retention
        self.listen_ttl = listen_ttl
        self.key_prefix = key_prefix
        self.log = RedisLog.open(url)
        self.tagged = self.log.topology.kind == "cluster"
        self.local = MemoryGenerationStore(retention)
        self._running: set[str] = set()  # generations this process runs (not finished)
        self._cancel_callback: Callable[[str], object] | None = None
        self._background_started = False
        self._closed = False

    @property
    def client(self) -> Any:
        """The command client (a cluster client routes every key to its node)."""
        return self.log.client

    def key(self, stream_id: str) -> str:
        """The generation's stream; its other keys add a suffix (same hash tag)."""
        if self.tagged:
            return f"{self.key_prefix}{{{stream_id}}}"
        return self.key_prefix + stream_id

    def stream_id_of(self, key: str) -> str | None:
        """The inverse of :meth:`key` (None for a key that is no generation's)."""
        if not key.startswith(self.key_prefix):
            return None
        rest = key[len(self.key_prefix):]
        if self.tagged:
            return rest[1:-1] if rest.startswith("{") and rest.endswith("}") else None
        return rest

    # -- the owning process ------------------------------------------------------------

    def create(self, stream_id: str, owner: str | None = None) -> None:
        self._start_background()
        self.local.create(stream_id, owner)
        key = self.key(stream_id)
        marker: dict[str, Any] = {"q": 0}  # makes the generation known everywhere
        if owner is not None:
            marker["o"] = owner
        with mapped_errors(), self.client.pipeline(transaction=False) as pipe:
            pipe.xadd(key, marker)
            pipe.expire(key, RUNNING_TTL)
            pipe.set(key + ":alive", 1, ex=ALIVE_TTL)
            pipe.execute()
        self._running.add(stream_id)

    def append(self, stream_id: str, item: str | Part) -> int:
        seq = self.local.append(stream_id, item)
        self._mirror(stream_id, seq, final=False)
        return seq

    def finish(self, stream_id: str, close: dict[str, Any]) -> int:
        """Idempotent: a retried finish mirrors the close entry again (a second copy in
        the Redis stream with the same seq, which followers' codec skips)."""
        self._running.discard(stream_id)
        seq = self.local.finish(stream_id, close)
        self._mirror(stream_id, seq, final=True)
        return seq

    def _mirror(self, stream_id: str, seq: int, *, final: bool) -> None:
        fields: dict[str, Any] = {"q": seq, "c": self.local.entry(stream_id, seq)}
        if final:
            fields["f"] = 1
        self.log.append(self.key(stream_id), fields,
                        expire=(int(self.retention) or 1) if final else None)

    def owner_alive(self, stream_id: str) -> bool:
        """Whether the process running ``stream_id`` still refreshes its alive key."""
        try:
            return bool(self.client.exists(self.key(stream_id) + ":alive"))
        except ERRORS:
            return True  # cannot tell: do not end anything on a Redis hiccup

    # -- any process ---------------------------------------------------------------------

    def follow(self, stream_id: str, after: int, sink: Sink) -> Follow:
        if self.local.exists(stream_id):
            return self.local.follow(stream_id, after, sink)
        self._start_background()
        reader = self.log.reader
        key = self.key(stream_id)
        # Join the reader before replaying (live entries are held back meanwhile), so
        # nothing written between the replay and the first live read is missed.
        cursor = Follower(sink, replaying=True)
        reader.join(key, cursor, lambda: ChatCodec(stream_id))
        try:
            replay = self.log.replay(key, None)
            parsed = _first_of_each(_fields(fields) for _id, fields in replay.entries)
            last_seq = max((seq for seq, _c, _f in parsed), default=-1)
            done = any(final for _s, _c, final in parsed)
            status = FollowStatus.LIVE
            if not parsed or after > last_seq or not _contiguous(parsed, after):
                # unknown, or entries after `after` are gone (a Redis that lost its data
                # while the reply ran on): never a reply with a silent hole in it
                status = FollowStatus.UNKNOWN
            elif done and after >= last_seq:
                status = FollowStatus.FINISHED
            elif not done and not self.owner_alive(stream_id):
                status = FollowStatus.UNKNOWN  # its process died: it will never finish
            elif not done:
                self.client.set(key + ":listen", 1, ex=max(int(self.listen_ttl), 2))
        except BaseException as exc:
            reader.leave(cursor)
            if isinstance(exc, ERRORS):
                raise BrokerError(f"redis unavailable: {exc}") from exc
            raise
        if status is not FollowStatus.LIVE:
            reader.leave(cursor)
            return Follow(status)
        prelude = b"".join(chunk for seq, chunk, _f in parsed if seq > after)
        if done:
            reader.leave(cursor)
            sink.close(CloseReason.FINISHED)
            return Follow(FollowStatus.LIVE, prelude)
        reader.go_live(cursor, replay.end)
        return Follow(FollowStatus.LIVE, prelude, lambda: reader.leave(cursor))

    def _followed(self) -> list[str]:
        """The generations run elsewhere that clients of this process follow."""
        ids = (self.stream_id_of(key) for key in self.log.reader.followed_keys())
        return [i for i in ids if i is not None and i not in self._running]

    def owner_of(self, stream_id: str) -> str | None:
        if self.local.exists(stream_id):
            return self.local.owner_of(stream_id)
        with mapped_errors():
            first = self.client.xrange(self.key(stream_id), count=1)
        owner = first[0][1].get(b"o") if first else None
        return None if owner is None else text(owner)

    def exists(self, stream_id: str) -> bool:
        if self.local.exists(stream_id):
            return True
        with mapped_errors():
            return bool(self.client.exists(self.key(stream_id)))

    def set_alias(self, name: str, stream_id: str) -> None:
        """Aliases (AI SDK chat id -> its active generation) in Redis, for every host."""
        with mapped_errors():
            self.client.set(self.key_prefix + "alias:" + name, stream_id, ex=RUNNING_TTL)

    def clear_alias(self, name: str, stream_id: str) -> None:
        """One script, so no SET of a newer reply can fall between the check and the
        delete (a GET then a DEL could clear the alias of the reply that replaced this
        one)."""
        with mapped_errors():
            self.client.eval(_CLEAR_IF_SAME, 1, self.key_prefix + "alias:" + name, stream_id)

    def alias(self, name: str) -> str | None:
        with mapped_errors():
            value = self.client.get(self.key_prefix + "alias:" + name)
        return None if value is None else value.decode()

    def has_remote_followers(self, stream_id: str) -> bool:
        try:
            return bool(self.client.exists(self.key(stream_id) + ":listen"))
        except ERRORS:
            return True  # cannot tell: keep the generation (the grace timer asks again)

    def request_cancel(self, stream_id: str) -> bool:
        """One PUBLISH for a generation running elsewhere; none for a finished or
        unknown one."""
        with mapped_errors():
            last = self.client.xrevrange(self.key(stream_id), count=1)
            if not last:
                return False
            if b"f" not in last[0][1]:
                self.client.publish(self.key_prefix + "cancel", stream_id)
        return True

    def on_remote_cancel(self, callback: Callable[[str], object]) -> None:
        self._cancel_callback = callback

    # -- background ------------------------------------------------------------------------

    def _start_background(self) -> None:
        """The cancel listener and the keep-alive, once per process, at first use."""
        if self._background_started:
            return
        self._background_started = True
        concurrency = runtime.current()
        concurrency.spawn(self._listen_for_cancels, contextvars.Context())
        concurrency.spawn(self._keep_alive, contextvars.Context())

    def _keep_alive(self) -> None:
        """Every ALIVE_EVERY seconds, one pipeline: refresh the alive keys of the
        generations this process runs (so other hosts can tell a crashed owner) and the
        listen keys of those it follows; end the followers of a generation whose owner
        stopped refreshing (their clients come back and are told)."""
        concurrency = runtime.current()
        while not self._closed:
            concurrency.sleep(ALIVE_EVERY)
            running, followed = list(self._running), self._followed()
            if not running and not followed:
                continue
            try:
                with self.client.pipeline(transaction=False) as pipe:
                    for stream_id in running:
                        pipe.set(self.key(stream_id) + ":alive", 1, ex=ALIVE_TTL)
                    for stream_id in followed:
                        key = self.key(stream_id)
                        pipe.set(key + ":listen", 1, ex=max(int(self.listen_ttl), 2))
                        pipe.exists(key + ":alive")
                    results = pipe.execute()
            except ERRORS as exc:
                log.warning("chat keep-alive: %s", exc)
                continue
            except Exception:
                log.exception("chat keep-alive failed")
                continue
            alive = results[len(running) + 1::2]
            for stream_id, ok in zip(followed, alive, strict=False):
                if not ok:
                    self.log.reader.end_key(self.key(stream_id), CloseReason.BROKER_LOST)

    def _listen_for_cancels(self) -> None:
        """One pub/sub connection per process: cancel requests from other processes.
        Only a generation this process runs is cancelled, and locally: a request never
        causes another message."""
        backoff = Backoff(first=0.5, limit=5.0)
        sleep = runtime.current().sleep
        channel = self.key_prefix + "cancel"
        while not self._closed:
            pubsub = None
            try:
                pubsub = self.log.listener(channel)
                pubsub.subscribe(channel)
                backoff.reset()
                for message in pubsub.listen():
                    if self._closed:
                        return
                    if message["type"] != "message":
                        continue
                    stream_id = text(message["data"])
                    if self._cancel_callback is not None and stream_id in self._running:
                        self._cancel_callback(stream_id)
            except ERRORS as exc:
                if self._closed:
                    return
                log.warning("chat cancel listener: %s; reconnecting", exc)
                with contextlib.suppress(*ERRORS):
                    self.log.topology.refresh()  # a failover: its node may have moved
            except Exception:
                if self._closed:
                    return
                log.exception("chat cancel listener failed; restarting")
            finally:
                if pubsub is not None:
                    with contextlib.suppress(*ERRORS):
                        pubsub.close()
            sleep(backoff.next_delay())

    def close(self) -> None:
        """Stop the background loops and give the log back. The keep-alive ends within
        ALIVE_EVERY; the cancel listener at its next message or connection error (its
        pub/sub connection is not closed from here: redis-py's is not thread-safe)."""
        self._closed = True
        self.log.release()
