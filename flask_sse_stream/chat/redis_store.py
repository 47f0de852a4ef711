"""Generation logs on Redis Streams, so a reply can be resumed on any worker or host.

The process running a generation keeps a local log (its own followers are served from
memory, with no Redis round trip) and mirrors every encoded entry into the Redis stream
``<prefix><stream_id>`` (fields: ``q`` the seq, ``c`` the SSE bytes, ``f`` on the close
event). A client that resumes on another process reads that stream: history with
``XRANGE``, then live entries from one ``XREAD`` loop per generation per process, however
many clients follow it there. Cancelling from another process is a message on one pub/sub
channel, read by one listener per process. Finished logs expire after ``retention``.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from ..brokers.base import BrokerError
from ..brokers.redis import blocking_client, command_client
from ..concurrency import current as current_concurrency
from ..mailbox import CloseReason, Mailbox
from .generation import Follow, FollowStatus, GenerationStore, MemoryGenerationStore

__all__ = ["RedisGenerationStore"]

log = logging.getLogger("flask_sse_stream.chat")

BLOCK_MS = 2000
RUNNING_TTL = 3600  # a generation whose process died without finishing expires after this
ALIVE_TTL = 10  # seconds: how soon other hosts notice that the owner process died
ALIVE_EVERY = 3
_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)


class _Follower:
    __slots__ = ("floor", "held", "mailbox")

    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox
        self.held: list[tuple[int, bytes, bool]] | None = []
        self.floor = 0  # entries up to this seq were sent by the replay


class _RemoteReader:
    """One XREAD loop in this process for a generation that runs elsewhere."""

    def __init__(self, store: RedisGenerationStore, stream_id: str, start_id: str) -> None:
        self.store = store
        self.stream_id = stream_id
        self.last_id = start_id
        self.followers: set[_Follower] = set()
        self.done = False

    def run(self) -> None:
        store = self.store
        key = store.key(self.stream_id)
        failures = 0
        try:
            while not self.done:
                with store.lock:
                    if not self.followers:
                        return
                try:
                    store.client.set(key + ":listen", 1, ex=max(int(store.listen_ttl), 2))
                    response = store.reader_client.xread({key: self.last_id}, block=BLOCK_MS)
                    failures = 0
                except _ERRORS as exc:
                    failures += 1
                    log.warning("chat reader %s: %s", self.stream_id, exc)
                    if failures >= 5:
                        self.end(CloseReason.BROKER_LOST)  # clients reconnect and resume
                        return
                    time.sleep(0.2 * failures)
                    continue
                if not response and not store.owner_alive(self.stream_id):
                    # The process running it died: end these streams; the clients come
                    # back and are told the reply is no longer available.
                    self.end(CloseReason.BROKER_LOST)
                    return
                for _key, entries in response or ():
                    for entry_id, fields in entries:
                        self.last_id = entry_id.decode()
                        seq, chunk, final = _fields(fields)
                        if seq:
                            self.deliver(seq, chunk, final)
        finally:
            with store.lock:
                if store.remote.get(self.stream_id) is self:
                    del store.remote[self.stream_id]

    def deliver(self, seq: int, chunk: bytes, final: bool) -> None:
        with self.store.lock:  # decide per follower under the lock: no double hand-over
            targets = []
            for follower in self.followers:
                if follower.held is not None:
                    follower.held.append((seq, chunk, final))
                elif seq > follower.floor:
                    targets.append(follower)
        for follower in targets:
            _hand_over(follower.mailbox, chunk, final)
        if final:
            self.done = True

    def end(self, reason: CloseReason) -> None:
        with self.store.lock:
            followers, self.followers = self.followers, set()
        for follower in followers:
            follower.mailbox.close(reason)


def _hand_over(mailbox: Mailbox, chunk: bytes, final: bool) -> None:
    if not mailbox.offer(chunk):
        mailbox.close(CloseReason.OVERFLOW)
    elif final:
        mailbox.close(CloseReason.FINISHED)


def _fields(fields: dict[bytes, bytes]) -> tuple[int, bytes, bool]:
    return int(fields.get(b"q", b"0")), fields.get(b"c", b""), b"f" in fields


class RedisGenerationStore(GenerationStore):
    def __init__(
        self, url: str, *, retention: float = 300.0, listen_ttl: float = 30.0,
        key_prefix: str = "sse-chat:",
    ) -> None:
        self.retention = retention
        self.listen_ttl = listen_ttl
        self.key_prefix = key_prefix
        self.client = command_client(url)
        self.reader_client = blocking_client(url, timeout=BLOCK_MS / 1000 + 5)
        # pub/sub waits indefinitely for messages: no read timeout
        self.pubsub_client = blocking_client(url)
        self.local = MemoryGenerationStore(retention)
        self.remote: dict[str, _RemoteReader] = {}
        self._running: set[str] = set()  # generations this process runs
        self.lock = threading.Lock()
        self._cancel_callback: Callable[[str], object] | None = None
        self._listener_started = False

    def key(self, stream_id: str) -> str:
        return self.key_prefix + stream_id

    # -- the owning process ------------------------------------------------------------

    def create(self, stream_id: str, owner: str | None = None) -> None:
        self._start_background()
        self.local.create(stream_id, owner)
        key = self.key(stream_id)
        marker: dict[str, Any] = {"q": 0}  # makes the generation known everywhere
        if owner is not None:
            marker["o"] = owner
        try:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.xadd(key, marker)
                pipe.expire(key, RUNNING_TTL)
                pipe.set(key + ":alive", 1, ex=ALIVE_TTL)
                pipe.execute()
            self._running.add(stream_id)
        except _ERRORS as exc:
            raise BrokerError(f"redis unavailable: {exc}") from exc

    def append(self, stream_id: str, data: dict[str, Any], event: str | None = None) -> int:
        seq = self.local.append(stream_id, data, event)
        self._mirror(stream_id, seq, final=False)
        return seq

    def finish(self, stream_id: str, data: dict[str, Any]) -> int:
        self._running.discard(stream_id)
        seq = self.local.finish(stream_id, data)
        self._mirror(stream_id, seq, final=True)
        return seq

    def owner_alive(self, stream_id: str) -> bool:
        """Whether the process running ``stream_id`` still refreshes its alive key."""
        try:
            return bool(self.client.exists(self.key(stream_id) + ":alive"))
        except _ERRORS:
            return True  # cannot tell: do not end anything on a Redis hiccup

    def _keep_alive(self) -> None:
        """Refresh the alive keys of the generations this process runs (one pipeline
        every ALIVE_EVERY seconds), so other hosts can tell a crashed owner."""
        while True:
            time.sleep(ALIVE_EVERY)
            if not self._running:
                continue
            try:
                with self.client.pipeline(transaction=False) as pipe:
                    for stream_id in list(self._running):
                        pipe.set(self.key(stream_id) + ":alive", 1, ex=ALIVE_TTL)
                    pipe.execute()
            except _ERRORS as exc:
                log.warning("chat keep-alive: %s", exc)

    def _mirror(self, stream_id: str, seq: int, *, final: bool) -> None:
        fields: dict[str, Any] = {"q": seq, "c": self.local.entry(stream_id, seq)}
        key = self.key(stream_id)
        try:
            if final:
                fields["f"] = 1
                with self.client.pipeline(transaction=False) as pipe:
                    pipe.xadd(key, fields)
                    pipe.expire(key, int(self.retention) or 1)
                    pipe.execute()
            else:
                self.client.xadd(key, fields)
        except _ERRORS as exc:
            raise BrokerError(f"redis unavailable: {exc}") from exc

    # -- any process ---------------------------------------------------------------------

    def follow(self, stream_id: str, after: int, mailbox: Mailbox) -> Follow:
        if self.local.exists(stream_id):
            return self.local.follow(stream_id, after, mailbox)
        follower = _Follower(mailbox)
        with self.lock:
            reader = self.remote.get(stream_id)
            if reader is not None and not reader.done:
                reader.followers.add(follower)  # live entries are held back during XRANGE
            else:
                reader = None
        try:
            entries = self.client.xrange(self.key(stream_id))
        except _ERRORS as exc:
            self._drop(reader, follower)
            raise BrokerError(f"redis unavailable: {exc}") from exc
        parsed = [_fields(fields) for _id, fields in entries]
        last_seq = max((seq for seq, _c, _f in parsed), default=-1)
        done = any(final for _s, _c, final in parsed)
        if not entries or after > last_seq:
            self._drop(reader, follower)
            return Follow(FollowStatus.UNKNOWN)
        if done and after >= last_seq:
            self._drop(reader, follower)
            return Follow(FollowStatus.FINISHED)
        if not done and not self.owner_alive(stream_id):
            self._drop(reader, follower)
            return Follow(FollowStatus.UNKNOWN)  # its process died: it will never finish
        prelude = b"".join(chunk for seq, chunk, _f in parsed if seq > after)
        if done:
            self._drop(reader, follower)
            mailbox.close(CloseReason.FINISHED)
            return Follow(FollowStatus.LIVE, prelude)
        if reader is None:
            # the new reader starts right after what XRANGE returned: no seam
            reader = self._start_reader(stream_id, entries[-1][0].decode())
            follower.held = None
            with self.lock:
                reader.followers.add(follower)
        else:
            # the reader may be behind what XRANGE returned: skip up to last_seq
            with self.lock:
                held, follower.held = follower.held or [], None
                follower.floor = last_seq
            for seq, chunk, final in held:
                if seq > last_seq:
                    _hand_over(mailbox, chunk, final)

        def stop() -> None:
            self._drop(reader, follower)

        return Follow(FollowStatus.LIVE, prelude, stop)

    def _start_reader(self, stream_id: str, start_id: str) -> _RemoteReader:
        # If another request started a reader meanwhile, its position differs from ours:
        # this one gets its own (rare, and both end with the generation).
        reader = _RemoteReader(self, stream_id, start_id)
        with self.lock:
            self.remote[stream_id] = reader
        current_concurrency().spawn(reader.run, contextvars.Context())
        return reader

    def _drop(self, reader: _RemoteReader | None, follower: _Follower) -> None:
        if reader is not None:
            with self.lock:
                reader.followers.discard(follower)

    def owner_of(self, stream_id: str) -> str | None:
        if self.local.exists(stream_id):
            return self.local.owner_of(stream_id)
        try:
            first = self.client.xrange(self.key(stream_id), count=1)
        except _ERRORS as exc:
            raise BrokerError(f"redis unavailable: {exc}") from exc
        owner = first[0][1].get(b"o") if first else None
        return None if owner is None else owner.decode()

    def exists(self, stream_id: str) -> bool:
        if self.local.exists(stream_id):
            return True
        try:
            return bool(self.client.exists(self.key(stream_id)))
        except _ERRORS:
            return False

    def set_alias(self, name: str, stream_id: str | None) -> None:
        """Aliases (AI SDK chat id -> its active generation) in Redis, for every host."""
        key = self.key_prefix + "alias:" + name
        try:
            if stream_id is None:
                self.client.delete(key)
            else:
                self.client.set(key, stream_id, ex=RUNNING_TTL)
        except _ERRORS as exc:
            raise BrokerError(f"redis unavailable: {exc}") from exc

    def alias(self, name: str) -> str | None:
        try:
            value = self.client.get(self.key_prefix + "alias:" + name)
        except _ERRORS as exc:
            raise BrokerError(f"redis unavailable: {exc}") from exc
        return None if value is None else value.decode()

    def has_remote_followers(self, stream_id: str) -> bool:
        try:
            return bool(self.client.exists(self.key(stream_id) + ":listen"))
        except _ERRORS:
            return False

    def request_cancel(self, stream_id: str) -> bool:
        try:
            if not self.client.exists(self.key(stream_id)):
                return False
            self.client.publish(self.key_prefix + "cancel", stream_id)
        except _ERRORS as exc:
            raise BrokerError(f"redis unavailable: {exc}") from exc
        return True

    def on_remote_cancel(self, callback: Callable[[str], object]) -> None:
        self._cancel_callback = callback

    def _start_background(self) -> None:
        """The cancel listener and the keep-alive, once per process, at first use."""
        if self._listener_started:
            return
        self._listener_started = True
        concurrency = current_concurrency()
        concurrency.spawn(self._listen_for_cancels, contextvars.Context())
        concurrency.spawn(self._keep_alive, contextvars.Context())

    def _listen_for_cancels(self) -> None:
        """One pub/sub connection per process: cancel requests from other processes."""
        while True:
            try:
                pubsub = self.pubsub_client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.key_prefix + "cancel")
                for message in pubsub.listen():
                    stream_id = message["data"].decode()
                    if self._cancel_callback is not None and self.local.exists(stream_id):
                        self._cancel_callback(stream_id)
            except _ERRORS as exc:
                log.warning("chat cancel listener: %s; reconnecting", exc)
                time.sleep(1.0)
