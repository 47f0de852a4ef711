"""The mailbox between producers and the writer, both kinds: bounded, coalescing, and a
close that always gets through and wakes a waiting reader or producer.

The gevent mailbox is driven with greenlets in this (unpatched) process: gevent's hub runs
in the main thread without monkey-patching anything."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import gevent
import pytest
from gevent import monkey

from flask_sse_stream.runtime import END, CloseReason, Mailbox
from flask_sse_stream.runtime.gevent import GeventMailbox
from flask_sse_stream.runtime.threads import ThreadMailbox

Kind = Callable[[int], Mailbox]
KINDS: list[Kind] = [ThreadMailbox, GeventMailbox]


def run_blocked(kind: Kind, fn: Callable[[], object], wake: Callable[[], object]) -> object:
    """Run ``fn`` (which blocks) in a thread or greenlet, call ``wake`` once it is
    blocked, and return what ``fn`` returned."""
    result: list[object] = []
    if kind is GeventMailbox:
        greenlet = gevent.spawn(lambda: result.append(fn()))
        gevent.sleep(0.01)  # let it run until it blocks (a greenlet yields only there)
        assert not result, "did not block"
        wake()
        greenlet.join(5)
    else:
        started = threading.Event()

        def target() -> None:
            started.set()
            result.append(fn())

        thread = threading.Thread(target=target)
        thread.start()
        started.wait(5)
        time.sleep(0.02)  # a thread blocked in Queue.get has no event to observe
        assert not result, "did not block"
        wake()
        thread.join(5)
    assert result, "still blocked after the wake-up"
    return result[0]


def test_the_test_process_is_not_monkey_patched() -> None:
    assert not monkey.is_module_patched("socket")
    assert not monkey.is_module_patched("threading")


@pytest.mark.parametrize("kind", KINDS)
def test_offer_is_bounded(kind: Kind) -> None:
    box = kind(3)
    assert [box.offer(b"%d" % i) for i in range(5)] == [True, True, True, False, False]
    assert box.take(0) == [b"0", b"1", b"2"]  # coalesced, in order, nothing beyond the bound
    assert box.offer(b"3")  # room again


@pytest.mark.parametrize("kind", KINDS)
def test_take_coalesces_everything_queued(kind: Kind) -> None:
    box = kind(10)
    for chunk in (b"a", b"b", b"c"):
        assert box.put(chunk, timeout=0)
    assert box.take(0) == [b"a", b"b", b"c"]
    assert box.take(0.01) is None  # nothing left: a timeout gives None


@pytest.mark.parametrize("kind", KINDS)
def test_put_times_out_when_full_and_refuses_once_closed(kind: Kind) -> None:
    box = kind(1)
    assert box.put(b"a", timeout=0.01)
    assert not box.put(b"b", timeout=0.01)
    box.close(CloseReason.OVERFLOW)
    assert not box.put(b"c", timeout=0.01)
    assert box.reason is CloseReason.OVERFLOW


@pytest.mark.parametrize("kind", KINDS)
def test_close_wakes_a_waiting_reader(kind: Kind) -> None:
    box = kind(4)
    got = run_blocked(kind, lambda: box.take(None),
                      lambda: box.close(CloseReason.SHUTDOWN))
    assert got == [END]
    assert box.reason is CloseReason.SHUTDOWN


@pytest.mark.parametrize("kind", KINDS)
def test_an_offer_wakes_a_waiting_reader(kind: Kind) -> None:
    box = kind(4)
    got = run_blocked(kind, lambda: box.take(None), lambda: box.offer(b"x"))
    assert got == [b"x"]


def test_gevent_close_wakes_a_waiting_producer() -> None:
    box = GeventMailbox(1)
    assert box.offer(b"a")
    got = run_blocked(GeventMailbox, lambda: box.put(b"b", timeout=None),
                      lambda: box.close(CloseReason.DISCONNECTED))
    assert got is False


@pytest.mark.parametrize("kind", KINDS)
def test_taking_makes_room_for_a_waiting_producer(kind: Kind) -> None:
    box = kind(1)
    assert box.offer(b"a")
    got = run_blocked(kind, lambda: box.put(b"b", timeout=5), lambda: box.take(0))
    assert got is True
    assert box.take(0) == [b"b"]


@pytest.mark.parametrize("kind", KINDS)
def test_the_first_close_reason_wins_and_drain_keeps_real_chunks(kind: Kind) -> None:
    box = kind(4)
    box.offer(b"a")
    box.offer(b"b")
    box.close(CloseReason.OVERFLOW)
    box.close(CloseReason.DISCONNECTED)
    assert box.reason is CloseReason.OVERFLOW
    assert box.drain() == [b"a", b"b"]
    assert box.drain() == []


def test_gevent_close_gets_through_a_full_mailbox() -> None:
    box = GeventMailbox(2)
    box.offer(b"a")
    box.offer(b"b")
    box.close(CloseReason.OVERFLOW)
    assert box.take(0) == [b"a", b"b", END]  # the reader sees the end after the queued


def test_thread_close_of_a_full_mailbox_is_seen_through_reason() -> None:
    box = ThreadMailbox(2)
    box.offer(b"a")
    box.offer(b"b")
    box.close(CloseReason.OVERFLOW)  # no room for END: the writer checks .reason
    assert box.reason is CloseReason.OVERFLOW
    assert box.take(0) == [b"a", b"b"]


def test_gevent_offer_goes_direct_only_to_a_parked_reader_with_nothing_queued() -> None:
    """``direct`` (a response writing the chunk itself) is asked only while the reader
    waits in take() with an empty list; END, a full or closed box, a reader that was woken
    (even before it ran) or timed out, and a waiting producer all queue instead."""
    box = GeventMailbox(2)
    written: list[bytes] = []
    accept = [True]

    def direct(chunk: bytes) -> bool:
        if accept[0]:
            written.append(chunk)
        return accept[0]

    box.direct = direct
    assert box.offer(b"a") and written == []  # no reader parked: queued
    assert box.take(0) == [b"a"]
    assert box.take(0.01) is None  # a timeout clears the slot
    assert box.offer(b"b") and written == []
    assert box.take(0) == [b"b"]

    taken: list[object] = []
    reader = gevent.spawn(lambda: taken.append(box.take(None)))
    gevent.sleep(0.01)  # parked
    assert box.offer(b"c") and written == [b"c"] and box.drain() == []
    accept[0] = False  # e.g. the socket's buffer is full: queued, and the reader woken
    assert box.offer(b"d") and written == [b"c"]
    assert box.offer(b"e") and written == [b"c"]  # woken but not yet run: queued behind
    reader.join(5)
    assert taken == [[b"d", b"e"]]

    accept[0] = True
    reader = gevent.spawn(lambda: taken.append(box.take(None)))
    gevent.sleep(0.01)
    box.offer(END)  # the end is never written directly
    reader.join(5)
    assert taken[-1] == [END] and written == [b"c"]

    box = GeventMailbox(1)
    box.direct = direct
    assert box.offer(b"x")
    producer = gevent.spawn(lambda: taken.append(box.put(b"y", timeout=5)))
    gevent.sleep(0.01)  # the producer waits in the slot, the list is full: no direct
    assert not box.offer(b"z") and written == [b"c"]
    assert box.take(0) == [b"x"]
    producer.join(5)
    put_result: object = taken[-1]
    assert put_result is True and box.take(0) == [b"y"]
    reader = gevent.spawn(lambda: taken.append(box.take(None)))
    gevent.sleep(0.01)
    box.close(CloseReason.SHUTDOWN)
    assert not box.offer(b"late") and written == [b"c"]  # closed: refused, never direct
    reader.join(5)
