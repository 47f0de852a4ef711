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
import re

from .event import Event
from .numbers import ascii_int

__all__ = ["EventParser", "parse_events"]

_LINE_END = re.compile(r"\r\n|\r|\n")


class EventParser:
    """Feed bytes as they arrive; get back the events completed by them."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pieces: list[str] = []  # the unfinished line
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
        # The unfinished line holds no line break, so only new text is searched, and it
        # is kept in pieces until a break comes: a long line in many chunks stays linear.
        if _LINE_END.search(text) is None:
            if text:
                self._pieces.append(text)
            return events
        self._pieces.append(text)
        buffer = "".join(self._pieces)
        start = 0
        for match in _LINE_END.finditer(buffer, len(buffer) - len(text)):
            line = buffer[start : match.start()]
            start = match.end()
            if match.group() == "\r" and start == len(buffer):
                self._skip_lf = True  # a CRLF may be split across chunks
            event = self._line(line)
            if event is not None:
                events.append(event)
        self._pieces = [buffer[start:]] if start < len(buffer) else []
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
        elif name == "retry":
            retry = ascii_int(value)
            if retry is not None:
                self._retry = retry
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
