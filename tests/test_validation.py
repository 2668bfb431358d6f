"""The client-side rules against PostgreSQL's own JSONB input function.

Any str is a value. What the library takes for JSON must be storable as
JSONB as it is; everything else (text that is not JSON, a document holding
a NUL, \u0000) goes into an envelope JSONB can hold, and reads back exactly.
What is still refused must be something no backend can store faithfully.
"""

from __future__ import annotations

import json

import psycopg
import pytest

from utils.infrastructure.contract.errors import StorageTypeError, StorageValueError
from utils.infrastructure.contract.json_envelope import MARKER, from_stored, to_stored
from utils.infrastructure.contract.validation import DEFAULT_MAX_VALUE_BYTES, check_value

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

# Not JSON: JSONB refuses each, the library stores it as text in an envelope.
TEXT = [
    "",
    " \n\t",
    "test_value",
    "not json",
    '{"a": 1',
    "NaN",
    "Infinity",
    "-Infinity",
    '{"x": NaN}',
    "[1,]",
    "{'single': 'quotes'}",
    '"\\ud800"',  # escaped lone surrogates: valid JSON text, but not JSONB's
    '"\\udc00\\ud800"',
    "a NUL \x00 itself",
    '{"a": 1} {"b": 2}',
]

# Postgres would read these as JSONB; the library keeps them as text instead
# (orjson does not read them: nesting deeper than 1024).
TEXT_THOUGH_POSTGRES_READS_IT = ["[" * 1025 + "]" * 1025]

# JSONB refuses these (a NUL); the library accepts them and stores them in an envelope.
NEEDS_ENVELOPE = [
    '{"a": "\\u0000"}',
    '{"\\u0000key": 1}',
    '"\\u0000"',
    '"\\\\\\u0000"',  # an escaped backslash, then a NUL
    json.dumps({"text": "naïve ✓ \u0000"}, ensure_ascii=False),
]

# JSON whose number Postgres accepts and the library refuses (json_numbers.py):
# stricter is safe, and the list documents where the two differ.
STRICTER_THAN_POSTGRES = ["1e400", "[1, -1E+400]", "1" * 400]

# No backend can store these: UTF-8 cannot encode a lone surrogate.
NOT_UNICODE = ["\ud800", "text \udfff text", '{"a": "\udc80"}']


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
    assert check_value(text, DEFAULT_MAX_VALUE_BYTES) is True
    assert postgres_accepts(conn, text)


@pytest.mark.parametrize("text", TEXT + TEXT_THOUGH_POSTGRES_READS_IT, ids=lambda t: repr(t[:40]))
def test_text_is_accepted_and_stored_in_an_envelope(conn, text):
    assert check_value(text, DEFAULT_MAX_VALUE_BYTES) is False
    assert postgres_accepts(conn, text) == (text in TEXT_THOUGH_POSTGRES_READS_IT)
    stored = to_stored(text)
    assert postgres_accepts(conn, stored)
    assert from_stored(jsonb_text(conn, stored)) == text


@pytest.mark.parametrize("text", STRICTER_THAN_POSTGRES, ids=lambda t: t[:40])
def test_known_cases_where_the_library_is_stricter(conn, text):
    with pytest.raises(StorageValueError, match="cannot be stored"):
        check_value(text, DEFAULT_MAX_VALUE_BYTES)
    assert postgres_accepts(conn, text)


def test_json_orjson_cannot_read_still_follows_the_number_rule():
    with pytest.raises(StorageValueError, match="too close to 0"):
        check_value('["\\ud800", 1e-400]', DEFAULT_MAX_VALUE_BYTES)


@pytest.mark.parametrize("text", NOT_UNICODE, ids=repr)
def test_text_utf8_cannot_encode_is_refused(text):
    with pytest.raises(StorageValueError, match="UTF-8, which every store keeps text in, cannot encode it"):
        check_value(text, DEFAULT_MAX_VALUE_BYTES)


@pytest.mark.parametrize("value", [None, b"test_value", {"a": 1}, 5, ["x"]], ids=repr)
def test_a_value_that_is_not_a_str_is_a_type_error(value):
    with pytest.raises(StorageTypeError, match=f"^value must be a str, got {type(value).__name__}$"):
        check_value(value, DEFAULT_MAX_VALUE_BYTES)


def test_pathologically_deep_nesting_is_text_not_a_crash(conn):
    text = "[" * 1_000_000 + "]" * 1_000_000
    assert check_value(text, 8 * DEFAULT_MAX_VALUE_BYTES) is False
    assert from_stored(jsonb_text(conn, to_stored(text))) == text


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


@pytest.mark.parametrize("lookalike", [json.dumps({MARKER: "[1, 2]"}), json.dumps({MARKER: ["a", "b"]})])
def test_a_document_that_would_read_as_an_envelope_is_wrapped_too(conn, lookalike):
    assert postgres_accepts(conn, lookalike)
    stored = to_stored(lookalike)
    assert stored != lookalike
    assert from_stored(jsonb_text(conn, stored)) == lookalike
