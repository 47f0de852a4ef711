"""Hypothesis strategies for hostile input, shared by the in-process and the server fuzz.

Text is drawn from all of Unicode (no alphabet restriction). Header values are what HTTP
can carry: bytes, decoded as Latin-1 by every WSGI server (PEP 3333), so a client's UTF-8
arrives as mojibake and a single byte such as 0xB2 arrives as "²". Ids are also drawn in
the shape the server parses (``<boot>-<n>``, ``<stream_id>:<seq>``) with digits from every
script, since ``str.isdigit()`` and ``int()`` disagree about some of them.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

# Digits and number characters of many scripts (escaped, so they can be told apart):
# superscripts, subscripts, Arabic-Indic, NKo, Devanagari, Bengali, Thai, Myanmar, Khmer,
# Mongolian, fullwidth, mathematical, circled, Roman numerals, fractions.
ODD_DIGITS = (
    "0123456789\u00b2\u00b3\u00b9\u2070\u2074\u2080\u2089\u0660\u0663\u0669\u06f3"
    "\u07c0\u0966\u0969\u09e7\u09e9\u0e53\u1043\u17e0\u1813\uff13\uff10\uff19"
    "\U0001d7ce\U0001d7d7\U0001d7d8\U0001f101\u2460\u2469\u216b\u00bd\u1040"
)
odd_number = st.text(st.sampled_from(ODD_DIGITS), min_size=1, max_size=12)

# Header bytes HTTP can carry in a field value: visible ASCII, obs-text (0x80-0xFF) and
# spaces or tabs inside. No CR, LF, NUL or other controls (servers refuse them outright).
_FIELD_BYTES = [b for b in range(0x20, 0x100) if b != 0x7F] + [0x09]
raw_header_bytes = st.lists(st.sampled_from(_FIELD_BYTES), max_size=200).map(
    lambda bs: bytes(bs).strip(b" \t"))  # leading/trailing blanks are not part of a value


def as_header_value(text: str) -> bytes:
    """What a client sending ``text`` as UTF-8 puts on the wire, blanks trimmed; CR, LF,
    NUL and other controls dropped (no client can send them in a header)."""
    kept = "".join(c for c in text if c == "\t" or (c >= " " and c != "\x7f"))
    return kept.encode("utf-8", "surrogatepass").strip(b" \t")


def header_values(*shapes: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    """Raw Latin-1 bytes, any Unicode text as UTF-8, or one of ``shapes`` as UTF-8 or (where
    it fits) as Latin-1, the one way "²" reaches a server as "²"."""
    texts = st.one_of(st.text(max_size=200), *shapes)
    latin1 = st.one_of(*shapes).filter(_is_latin1).map(lambda s: s.encode("latin-1"))
    return raw_header_bytes | texts.map(as_header_value) | latin1


def _is_latin1(text: str) -> bool:
    return all(c == "\t" or (" " <= c <= "\xff" and c != "\x7f") for c in text) and \
        text == text.strip(" \t")


# Latin-1 holds three digits Python's isdigit() accepts and int() refuses: ² ³ ¹.
latin1_number = st.text(st.sampled_from("0123456789²³¹¼½"), min_size=1, max_size=12)


def channel_ids(boot: str) -> st.SearchStrategy[str]:
    """Memory-broker ids: this broker's ``boot`` (or any text) ``-`` odd digits."""
    return st.builds(lambda b, n: f"{b}-{n}", st.just(boot) | st.text(max_size=20),
                     odd_number | latin1_number)


stream_ids = st.from_regex(r"[A-Za-z0-9_-]{8,20}", fullmatch=True)
chat_ids = st.builds(lambda s, n: f"{s}:{n}", stream_ids | st.text(max_size=20),
                     odd_number | latin1_number)

# Lone surrogates can only arrive escaped in JSON ("\\ud800"); everything else as itself.
any_char_with_surrogates = st.characters(blacklist_categories=())
# Characters that break naive code, drawn often (from all of Unicode they would be rare):
# lone surrogates, NUL, line and paragraph separators, BOM, RTL override, astral emoji.
ODD_CHARS = "\ud800\udfff\x00\u2028\u2029\ufeff\u202e\U0001f600\x85\r\n a\u00e9"
json_text = (st.text(any_char_with_surrogates, max_size=100) | odd_number
             | st.text(st.sampled_from(ODD_CHARS), min_size=1, max_size=20))


def json_values(keys: list[str]) -> st.SearchStrategy[Any]:
    scalars = (st.none() | st.booleans() | st.integers()
               | st.floats(allow_nan=False, allow_infinity=False) | json_text)
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(keys) | st.text(max_size=10), children, max_size=4),
        max_leaves=12,
    )


chat_keys = ["message", "messages", "role", "content", "name"]
odd_text = st.text(st.sampled_from(ODD_CHARS), min_size=1, max_size=20)
chat_bodies = st.one_of(
    json_values(chat_keys),
    st.builds(lambda m: {"message": m}, json_text),
    st.builds(lambda m: {"message": m}, odd_text),
    st.builds(lambda ms: {"messages": ms}, st.lists(st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "user", "user", "assistant", "system", "tool", ""]),
         "content": json_text | odd_text}), max_size=4)),
)
