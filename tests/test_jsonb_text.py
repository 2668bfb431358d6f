"""jsonb_text.render prints a document exactly as PostgreSQL prints it back from JSONB."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_json_delta import ROOTS, TOKENS, write
from utils.infrastructure.remote.jsonb_text import fingerprint, numeric_text, render


@pytest.fixture(scope="module")
def conn(postgres_server):
    # Printing needs no schema: a database of its own, untouched.
    with postgres_server.connect(postgres_server.create_database("jsonb_text")) as conn:
        yield conn


def printed(conn, text: str) -> str:
    return conn.execute("select %s::jsonb::text", (text,)).fetchone()[0]


@pytest.mark.parametrize("token", TOKENS + ["-0", "-0.0", "0e5", "1e-5", "1.0E+2", "123.4500e-2", "-1e300", "5e-324"])
def test_numbers_print_as_numeric_prints_them(conn, token):
    assert numeric_text(token) == printed(conn, token)


@pytest.mark.parametrize("text", [
    '{"bb": 1, "a": 2, "ccc": {"é": "\\u00e9\\/", "e": "\\t\\u001f\\u007f\\u2028"}}',
    '{"a": 1, "a": 2.50}', "[]", "{}", '"x"', "null", '[1.0, {"k": [true, false]}]',
    '{"\\u00e9": 1, "z": 2, "ab": 3}',
])
def test_documents_print_as_jsonb_prints_them(conn, text):
    assert render(text) == printed(conn, text)


def test_a_document_holding_a_nul_is_not_rendered():
    assert render('{"a": "\\u0000"}') is None


def test_the_fingerprint_is_postgres_md5_of_the_printed_text(conn):
    text = '{"b": "ü", "a": 1e2}'
    assert fingerprint(render(text)) == conn.execute("select md5(%s::jsonb::text)", (text,)).fetchone()[0]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(root=ROOTS, space=st.sampled_from(["", " ", "\n  "]))
def test_any_document_prints_as_postgres_prints_it(conn, root, space):
    text = write(root, space)
    rendered = render(text)
    if "\\u0000" in text:
        assert rendered is None
    else:
        assert rendered == printed(conn, text)
