"""The client-side JSON rules are never more lenient than PostgreSQL's JSONB.

Whatever the library accepts must be storable by every backend; this checks
the rules against a real server's jsonb input function.
"""

from __future__ import annotations

import json

import psycopg
import pytest

from utils.infrastructure.errors import StorageValueError
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
    "[1,]",
    "{'single': 'quotes'}",
    '{"a": "\\u0000"}',
    '"\\ud800"',
    '"\\udc00\\ud800"',
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
