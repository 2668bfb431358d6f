"""The client-side JSON rules are never more lenient than PostgreSQL's JSONB.

Whatever the library accepts must be storable by every backend; this checks
the rules against a real server's jsonb input function. The one exception,
a NUL (\u0000), is accepted and stored in an envelope JSONB can hold.
"""

from __future__ import annotations

import json

import psycopg
import pytest

from utils.infrastructure.errors import StorageValueError
from utils.infrastructure.json_envelope import MARKER, from_stored, to_stored
from utils.infrastructure.validation import DEFAULT_MAX_VALUE_BYTES, check_value

ACCEPTED = [
    "{}",
    "[]",
    "null",
    "-0",
    "1E+2",
    "1e308",
    "123456789012345678901234567890",
    '{"a": 1, "a": 2}',
    ' \n\t{"spaced": true} \n',
    '"\\ud83e\\udd16"',  # an escaped surrogate pair is one valid character
    '"\\u001b[31m"',
    '"\\\\u0000"',  # an escaped backslash followed by the text u0000: no NUL
    json.dumps({"deep": [[[[[[[[[[{"x": "naïve ✓"}]]]]]]]]]]}),
    "[" * 500 + "]" * 500,
]

REFUSED = [
    "",
    "not json",
    '{"a": 1',
    "NaN",
    "Infinity",
    "-Infinity",
    '{"x": NaN}',
    "[1,]",
    "{'single': 'quotes'}",
    '"\\ud800"',
    '"\\udc00\\ud800"',
]

# JSONB refuses these (a NUL); the library accepts them and stores them in an envelope.
NEEDS_ENVELOPE = [
    '{"a": "\\u0000"}',
    '{"\\u0000key": 1}',
    '"\\u0000"',
    '"\\\\\\u0000"',  # an escaped backslash, then a NUL
    json.dumps({"text": "naïve ✓ \u0000"}, ensure_ascii=False),
]

# Postgres accepts these, the library refuses them: stricter is safe, and the
# list documents where the two differ.
STRICTER_THAN_POSTGRES = ["1e400", "[" * 1025 + "]" * 1025]


@pytest.fixture(scope="module")
def conn(postgres_server):
    with postgres_server.connect() as conn:
        yield conn


def postgres_accepts(conn, text: str) -> bool:
    try:
        with conn.transaction():
            conn.execute("select %s::text::jsonb", (text,))
        return True
    except psycopg.DataError:
        return False


@pytest.mark.parametrize("text", ACCEPTED, ids=lambda t: t[:40])
def test_accepted_values_are_valid_jsonb(conn, text):
    check_value(text, DEFAULT_MAX_VALUE_BYTES)
    assert postgres_accepts(conn, text)


@pytest.mark.parametrize("text", REFUSED, ids=lambda t: t[:40])
def test_refused_values_are_refused_by_postgres_too(conn, text):
    with pytest.raises(StorageValueError):
        check_value(text, DEFAULT_MAX_VALUE_BYTES)
    assert not postgres_accepts(conn, text)


@pytest.mark.parametrize("text", STRICTER_THAN_POSTGRES, ids=lambda t: t[:40])
def test_known_cases_where_the_library_is_stricter(conn, text):
    with pytest.raises(StorageValueError):
        check_value(text, DEFAULT_MAX_VALUE_BYTES)
    assert postgres_accepts(conn, text)


def test_pathologically_deep_nesting_is_refused_not_a_crash():
    with pytest.raises(StorageValueError, match="depth"):
        check_value("[" * 1_000_000 + "]" * 1_000_000, 8 * DEFAULT_MAX_VALUE_BYTES)


def jsonb_text(conn, text: str) -> str:
    """What Postgres stores and prints for ``text`` (thread_get returns jsonb::text)."""
    return conn.execute("select %s::text::jsonb::text", (text,)).fetchone()[0]


@pytest.mark.parametrize("text", NEEDS_ENVELOPE, ids=lambda t: t[:40])
def test_nul_documents_are_accepted_and_stored_in_an_envelope(conn, text):
    check_value(text, DEFAULT_MAX_VALUE_BYTES)
    assert not postgres_accepts(conn, text)
    stored = to_stored(text)
    assert postgres_accepts(conn, stored)
    assert from_stored(jsonb_text(conn, stored)) == text


@pytest.mark.parametrize("text", ACCEPTED, ids=lambda t: t[:40])
def test_every_other_document_is_stored_as_it_is(conn, text):
    assert to_stored(text) is text
    assert from_stored(jsonb_text(conn, text)) == jsonb_text(conn, text)


def test_a_document_that_would_read_as_an_envelope_is_wrapped_too(conn):
    lookalike = json.dumps({MARKER: "[1, 2]"})
    assert postgres_accepts(conn, lookalike)
    stored = to_stored(lookalike)
    assert stored != lookalike
    assert from_stored(jsonb_text(conn, stored)) == lookalike
