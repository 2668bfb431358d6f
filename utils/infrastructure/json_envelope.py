"""Documents PostgreSQL's JSONB cannot hold, carried losslessly inside one it can.

JSONB refuses the escape ``\\u0000`` (a NUL character in a string), and tool
output a daemon puts into a conversation may contain one. The Postgres and
Supabase backends therefore store such a document as the envelope

    {"$conversation-storage:json-text": "<the caller's JSON text>"}

whose only value is the caller's text as a JSON string: there its escape
``\\u0000`` is six ordinary characters (written ``\\\\u0000``), which JSONB
holds. Reads unwrap it and return the caller's text byte for byte.

Every other document is stored as it is: writes pay one scan for the text
``\\u0000`` (which validation used to do to refuse it) and an anchored match
on the first key, reads one ``startswith``. So that a read never mistakes a
caller's document for an envelope, a document that would read as one (an
object whose only key is the marker, with a string value) is wrapped too.

Memory and SQLite keep the caller's text unchanged (SQLite stores it as
TEXT and never parses it), so they need none of this.
"""

from __future__ import annotations

import re

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


def to_stored(text: str) -> str:
    """The text to send to a JSONB column: ``text`` itself, or its envelope when needed."""
    if _NUL_ESCAPE.search(text) is None and _MAY_READ_AS_ENVELOPE.match(text) is None:
        return text  # nearly every document: one scan, one anchored match
    if needs_envelope(text):
        return _ENVELOPE_START + orjson.dumps(text).decode() + "}"
    return text


def from_stored(text: str | None) -> str | None:
    """The caller's text from what the store returned (an envelope is unwrapped)."""
    if text is not None and text.startswith(_STORED_START):
        document = orjson.loads(text)
        if _is_envelope(document):
            return document[MARKER]
    return text


def needs_envelope(text: str) -> bool:
    """True when JSONB cannot hold ``text`` as it is, or would read back as an envelope."""
    if _contains_nul(text):
        return True
    return bool(_MAY_READ_AS_ENVELOPE.match(text)) and _is_envelope(orjson.loads(text))


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
    return type(document) is dict and len(document) == 1 and type(document.get(MARKER)) is str
