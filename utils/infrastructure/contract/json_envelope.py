"""Values PostgreSQL's JSONB cannot hold as they are, carried losslessly inside one it can.

A value is any str. The Postgres and Supabase backends keep a JSON document
as JSONB, queryable in SQL; JSONB cannot take every value, so they store
the others as the envelope

    {"$conversation-storage:json-text": "<the caller's text>"}

whose only value is the caller's text as a JSON string, and reads unwrap it
and return that text byte for byte. Those values are:

- text that is not JSON (``"test_value"``, ``""``): JSONB would refuse it;
- a JSON document holding the escape ``\\u0000`` (a NUL in a string, as tool
  output may hold): JSONB refuses it, while in the envelope the escape is six
  ordinary characters (written ``\\\\u0000``);
- a document that would read as an envelope (an object whose only key is
  the marker, with a string or list of strings as its value), so that a
  read never mistakes a caller's document for one.

A NUL character itself (which JSON text cannot hold, so only plain text
has one) cannot be in a JSONB string either: such text is stored as the
list of its pieces between the NULs, ``{"$...": ["a", "b"]}`` for ``"a\\x00b"``.

What is JSON is decided as validation decides it (validation.py): orjson
reads it. Validation has just parsed the text a write sends, so it notes
the answer (:func:`note_json`) and the write asks by identity instead of
parsing the document a second time. Every other document then costs one
scan for the text ``\\u0000`` and an anchored match on the first key;
reads one ``startswith``.

Memory and SQLite keep the caller's text unchanged (SQLite stores it as
TEXT and never parses it), so they need none of this.
"""

from __future__ import annotations

import re
import threading

import orjson

MARKER = "$conversation-storage:json-text"
# How Postgres prints an envelope: jsonb's text output ({"key": value}), or
# compact JSON ({"key":value}) should a transport ever re-serialise it.
_STORED_START = '{"' + MARKER + '":'
_ENVELOPE_START = '{"' + MARKER + '": '

# A compiled pattern scans for this literal faster than `in` does.
_NUL_ESCAPE = re.compile(r"\\u0000")
# A top-level object whose first key, as written, starts with the marker's
# "$" or with an escape (which could spell it). Every document that would
# read as an envelope starts so; the rare others are parsed to be sure.
_MAY_READ_AS_ENVELOPE = re.compile(r'[ \t\n\r]*\{[ \t\n\r]*"[$\\]')


class _Noted(threading.local):
    """The texts this thread last learned to be JSON or not, most recent last."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, bool]] = []


_noted = _Noted()
# A write's new text and the text a near-cache patch starts from.
_NOTED_MAX = 2


def note_json(text: str, is_json: bool) -> None:
    """Record whether this very ``text`` object is JSON, for the write that sends it next.

    Holding the object keeps its identity from being reused for another text.
    """
    noted = _noted.texts
    noted.append((text, is_json))
    if len(noted) > _NOTED_MAX:
        del noted[0]


def is_json(text: str) -> bool:
    """True when ``text`` is a JSON document orjson reads, as validation decides."""
    for known, verdict in _noted.texts:
        if known is text:
            return verdict
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


def to_stored(text: str) -> str:
    """The text to send to a JSONB column: ``text`` itself, or its envelope when needed."""
    if not is_json(text):
        return _envelope(text)
    if _NUL_ESCAPE.search(text) is None and _MAY_READ_AS_ENVELOPE.match(text) is None:
        return text  # nearly every document: one scan, one anchored match
    if _contains_nul(text) or (_MAY_READ_AS_ENVELOPE.match(text) and _is_envelope(orjson.loads(text))):
        return _envelope(text)
    return text


def from_stored(text: str | None) -> str | None:
    """The caller's text from what the store returned (an envelope is unwrapped)."""
    if text is None:
        return None
    if text.startswith(_STORED_START):
        document = orjson.loads(text)
        if _is_envelope(document):
            inner = document[MARKER]
            return inner if type(inner) is str else "\x00".join(inner)
    # JSONB's own printing: a write of it (update, a near-cache patch) need not parse it again.
    note_json(text, True)
    return text


def _envelope(text: str) -> str:
    inner = text.split("\x00") if "\x00" in text else text
    return _ENVELOPE_START + orjson.dumps(inner).decode() + "}"


def _contains_nul(text: str) -> bool:
    """True when the JSON ``text`` holds a NUL, found without parsing it.

    An escape ``\\u0000`` is a NUL only where its backslash is not itself
    escaped, i.e. after an even run of backslashes: ``"\\\\u0000"`` is the
    text backslash-u0000. (Valid JSON has backslashes only inside strings.)
    """
    for match in _NUL_ESCAPE.finditer(text):
        start = run = match.start()
        while run and text[run - 1] == "\\":
            run -= 1
        if (start - run) % 2 == 0:
            return True
    return False


def _is_envelope(document: object) -> bool:
    if type(document) is not dict or len(document) != 1:
        return False
    inner = document.get(MARKER)
    return type(inner) is str or (type(inner) is list and all(type(piece) is str for piece in inner))
