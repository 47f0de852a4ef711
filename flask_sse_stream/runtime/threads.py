"""The runtime for servers that run each request in an OS thread (``flask run``,
threaded WSGI servers, Flask's test client): threads, and a mailbox on ``queue.Queue``.

A thread cannot be interrupted, so a blocked generator is stopped at its next yield, and
a disconnect is noticed at the next write or heartbeat.
"""

from __future__ import annotations

import contextlib
import contextvars
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from .mailbox import END, CloseReason, Mailbox
from .sockets import peer_closed

__all__ = ["THREADS", "ThreadMailbox"]


class _ThreadTask:
    __slots__ = ("done", "thread")

    def __init__(self, fn: Callable[[], None], context: contextvars.Context) -> None:
        self.done = threading.Event()

        def run() -> None:
            try:
                context.run(fn)
            finally:
                self.done.set()

        self.thread = threading.Thread(target=run, daemon=True, name="sse-task")
        self.thread.start()

    def stop(self, timeout: float) -> None:
        # The task sees its closed mailbox (or its stop flag) at its next step: wait for
        # that, bounded. A thread cannot be interrupted.
        if self.thread is not threading.current_thread():
            self.thread.join(timeout)

    def wait(self, timeout: float | None) -> bool:
        return self.done.wait(timeout)


class _Threads:
    name = "threading"
    cooperative = False

    def event_loop(self) -> None:
        return None

    def spawn(self, fn: Callable[[], None], context: contextvars.Context) -> _ThreadTask:
        return _ThreadTask(fn, context)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def new_mailbox(self, maxsize: int) -> Mailbox:
        return ThreadMailbox(maxsize)

    def watch_eof(
        self, sock: Any, on_close: Callable[[], None], on_data: Callable[[], None]
    ) -> None:
        return None  # the body polls peer_closed() at each heartbeat instead

    def direct_socket(self, sock: Any) -> None:
        return None

    def peer_closed(self, sock: Any) -> bool | None:
        return peer_closed(sock)

    def call_with_timeout(self, seconds: float, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` and return its result, or raise ``TimeoutError`` after ``seconds``.
        ``fn`` runs in a thread of its own, which runs on after a timeout (a thread cannot
        be interrupted)."""
        result: list[Any] = []
        failure: list[BaseException] = []

        def run() -> None:
            try:
                result.append(fn())
            except BaseException as exc:
                failure.append(exc)

        worker = threading.Thread(target=run, daemon=True, name="sse-call")
        worker.start()
        worker.join(seconds)
        if worker.is_alive():
            raise TimeoutError(f"did not finish within {seconds:g} s")
        if failure:
            raise failure[0]
        return result[0]


THREADS = _Threads()


class ThreadMailbox(Mailbox):
    __slots__ = ("_queue",)

    def __init__(self, maxsize: int) -> None:
        super().__init__()
        self._queue: queue.Queue[bytes] = queue.Queue(maxsize)

    def offer(self, chunk: bytes) -> bool:
        if self.reason is not None:
            return False
        try:
            self._queue.put_nowait(chunk)
        except queue.Full:
            return False
        return True

    def put(self, chunk: bytes, timeout: float | None = None) -> bool:
        if self.reason is not None:
            return False
        try:
            self._queue.put(chunk, timeout=timeout)
        except queue.Full:
            return False
        return True

    def close(self, reason: CloseReason) -> None:
        """A reader that is not waiting (the queue is full, so it is busy writing) sees
        ``reason`` before its next wait."""
        if self._closing(reason):
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(END)

    def take(self, timeout: float | None) -> list[bytes] | None:
        pending = self._queue
        try:
            first = pending.get(timeout=timeout)
        except queue.Empty:
            return None
        chunks = [first]
        if first is END:
            return chunks
        while pending.qsize():  # join what else is queued into the same write
            chunk = pending.get_nowait()
            chunks.append(chunk)
            if chunk is END:
                return chunks
        return chunks

    def drain(self) -> list[bytes]:
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self._queue.get_nowait()
            except queue.Empty:
                return chunks
            if chunk:
                chunks.append(chunk)
