"""A small incremental parser for ``text/event-stream`` (WHATWG "Interpreting an event
stream"), returning :class:`~.event.Event` objects. Used by the testing helper and the
``flask sse tail`` command; no Flask here.

Lines end with CRLF, LF or CR (a CR at the end of one chunk and an LF at the start of the
next are one line break); one space after the colon is stripped; comments and unknown
fields are ignored; a message is dispatched at a blank line only if it has data. Unlike a
browser, which reports the *last event id seen so far* on every message, each returned
``Event`` has the ``id`` (and ``retry``) fields of its own message block, so an event
parsed back compares equal to the ``Event`` that was sent; ``event`` is None for the
default ``message`` type. A message cut off before its blank line is not returned.
"""

from __future__ import annotations

import codecs

from .event import Event

__all__ = ["EventParser", "parse_events"]


class EventParser:
    """Feed bytes as they arrive; get back the events completed by them."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._first = True
        self._skip_lf = False  # the last chunk ended with CR: a leading LF belongs to it
        self._reset()

    def _reset(self) -> None:
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        text = self._decoder.decode(chunk)
        if self._first and text:
            self._first = False
            text = text.removeprefix("\ufeff")
        if self._skip_lf and text:
            self._skip_lf = False
            text = text.removeprefix("\n")
        events: list[Event] = []
        buffer = self._buffer + text
        start = 0
        i = 0
        n = len(buffer)
        while i < n:
            ch = buffer[i]
            if ch == "\n" or ch == "\r":
                line = buffer[start:i]
                if ch == "\r":
                    if i + 1 < n:
                        if buffer[i + 1] == "\n":
                            i += 1
                    else:
                        self._skip_lf = True
                start = i + 1
                event = self._line(line)
                if event is not None:
                    events.append(event)
            i += 1
        self._buffer = buffer[start:]
        return events

    def _line(self, line: str) -> Event | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> Event | None:
        if not self._data:
            # no data: nothing is dispatched, but a retry seen so far still counts
            retry = self._retry
            self._reset()
            self._retry = retry
            return None
        event = Event(
            "\n".join(self._data),
            event=self._event or None,
            id=self._id,
            retry=self._retry,
        )
        self._reset()
        return event


def parse_events(stream: bytes) -> list[Event]:
    """Every complete event in ``stream``."""
    return EventParser().feed(stream)
