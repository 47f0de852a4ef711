"""The encoder against the WHATWG parsing rules (no server involved)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flask_sse_stream import Event
from flask_sse_stream.wire.event import compact_json, encode_comment, encode_retry, to_bytes
from tests.fuzzing import json_text
from tests.sse_parser import ParsedEvent, parse

OPENING = b": ok\n"  # how every stream starts, so a payload is never at the stream's start


def roundtrip(*events: Event) -> list[ParsedEvent]:
    return parse(OPENING + b"".join(e.encode() for e in events)).events


@given(st.text())
def test_any_text_comes_back_exactly(text: str) -> None:
    (event,) = roundtrip(Event(text))
    expected = text.replace("\r\n", "\n").replace("\r", "\n")
    assert event.data == expected
    assert event.type == "message"


@given(st.text(), st.text().filter(lambda s: "\r" not in s and "\n" not in s),
       st.text().filter(lambda s: not set(s) & {"\r", "\n", "\0"}))
def test_event_and_id_survive_with_any_data(data: str, name: str, event_id: str) -> None:
    (event,) = roundtrip(Event(data, event=name, id=event_id))
    assert event.type == (name or "message")
    assert event.last_event_id == event_id


@given(st.recursive(
    st.none() | st.booleans() | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
).filter(lambda v: isinstance(v, (dict, list))))
def test_json_values_round_trip(value: object) -> None:
    (event,) = roundtrip(Event(value))
    assert json.loads(event.data) == value
    assert "\n" not in event.data  # compact: one data line


@given(st.lists(st.text(), min_size=1, max_size=5))
def test_a_sequence_of_events_stays_separate(texts: list[str]) -> None:
    got = roundtrip(*(Event(t, id=i) for i, t in enumerate(texts)))
    assert [e.data for e in got] == [t.replace("\r\n", "\n").replace("\r", "\n") for t in texts]
    assert [e.last_event_id for e in got] == [str(i) for i in range(len(texts))]


def test_wire_format() -> None:
    assert Event("hi").encode() == b"data: hi\n\n"
    assert Event("a\r\nb\rc\nd").encode() == b"data: a\ndata: b\ndata: c\ndata: d\n\n"
    assert Event("").encode() == b"data: \n\n"  # an empty message still dispatches
    assert Event(" x").encode() == b"data:  x\n\n"  # the parser strips exactly one space
    assert Event({"a": [1, "é"]}).encode() == 'data: {"a":[1,"é"]}\n\n'.encode()
    assert Event(b"raw\nbytes").encode() == b"data: raw\ndata: bytes\n\n"
    assert Event(0).encode() == b"data: 0\n\n"
    assert Event("x", id=0, retry=0).encode() == b"retry: 0\nid: 0\ndata: x\n\n"
    assert Event("x", event="tick").encode() == b"event: tick\ndata: x\n\n"


def test_line_separators_other_than_cr_lf_stay_inside_the_line() -> None:
    text = "a\u2028b\u2029c\x0bd\x0ce\x1cf\x85g"
    assert Event(text).encode() == ("data: " + text + "\n\n").encode()
    assert roundtrip(Event(text))[0].data == text


def test_comments_and_lone_retry_do_not_dispatch() -> None:
    assert Event(comment="keep-alive").encode() == b": keep-alive\n"
    assert Event(comment="two\nlines").encode() == b": two\n: lines\n"
    assert Event(retry=2500).encode() == b"retry: 2500\n"
    assert encode_comment() == b":\n"
    assert encode_retry(10) == b"retry: 10\n"
    result = parse(OPENING + Event(comment="x").encode() + Event(retry=5).encode())
    assert result.events == [] and result.retry == 5


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\r\nb"])
def test_line_breaks_in_event_or_id_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="line break"):
        Event("x", event=bad)
    with pytest.raises(ValueError, match="line break"):
        Event("x", id=bad)


def test_nul_in_id_is_refused() -> None:
    with pytest.raises(ValueError, match="NUL"):
        Event("x", id="a\0b")


@pytest.mark.parametrize("bad", [-1, 1.5, "100", True, None])
def test_retry_must_be_a_non_negative_int(bad: object) -> None:
    if bad is None:
        assert Event("x", retry=None).encode() == b"data: x\n\n"
        return
    with pytest.raises(ValueError, match="retry"):
        Event("x", retry=bad)  # type: ignore[arg-type]


def test_yielded_items() -> None:
    assert to_bytes("s") == b"data: s\n\n"
    assert to_bytes({"k": 1}) == b'data: {"k":1}\n\n'
    assert to_bytes([1]) == b"data: [1]\n\n"
    assert to_bytes(b"b") == b"data: b\n\n"
    assert to_bytes(Event("e", event="x")) == b"event: x\ndata: e\n\n"


def test_output_is_utf8_without_bom_and_lf_only() -> None:
    out = Event("ünï\r\ncode", event="é", id="ß").encode()
    assert not out.startswith(b"\xef\xbb\xbf")
    assert b"\r" not in out
    out.decode("utf-8")


# Every JSON value json.dumps takes, with text from all of Unicode (lone surrogates, NUL,
# U+2028 included), floats with NaN and infinities, and non-string keys it converts.
_json_scalars = (st.none() | st.booleans() | st.integers() | st.floats() | json_text)
_json_like = st.recursive(
    _json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.tuples(children, children)
    | st.dictionaries(json_text | st.integers() | st.floats() | st.booleans() | st.none(),
                      children, max_size=4),
    max_leaves=16,
)


def strict_dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@given(_json_like)
def test_compact_json_is_exactly_json_dumps_without_nan(value: Any) -> None:
    try:
        expected = strict_dumps(value)
    except ValueError as reference:  # NaN or an infinity somewhere: not JSON
        with pytest.raises(ValueError) as ours:
            compact_json(value)
        assert str(ours.value) == str(reference)
        return
    assert compact_json(value) == expected


def test_compact_json_fails_as_json_dumps_does() -> None:
    circular: list[Any] = []
    circular.append(circular)
    for bad, error in ((circular, ValueError), ({"x": object()}, TypeError),
                       ({(1, 2): 3}, TypeError), ([float("nan")], ValueError),
                       ({float("inf"): 1}, ValueError)):
        with pytest.raises(error) as ours:
            compact_json(bad)
        with pytest.raises(error) as reference:
            strict_dumps(bad)
        assert str(ours.value) == str(reference.value)
    # the check stays exact after a failure (each call gets fresh markers)
    shared = [1]
    assert compact_json([shared, shared]) == "[[1],[1]]"


@given(_json_like)
def test_a_json_token_is_one_data_line_whatever_its_text(value: Any) -> None:
    try:
        expected = strict_dumps({"v": value})
    except ValueError:
        return  # not JSON: refused (see above)
    (event,) = parse(OPENING + to_bytes({"v": value})).events
    assert event.data == expected.encode("utf-8", "replace").decode("utf-8")
