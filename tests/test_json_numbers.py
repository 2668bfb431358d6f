"""Numbers are accepted alike by every backend and read back within the limit.

PostgreSQL's JSONB stores numbers as numeric and prints them in plain
notation (``1.0E+2`` as ``100``, ``1e300`` as 301 digits); memory and SQLite
keep the caller's text. The rule in json_numbers.py refuses, everywhere,
what Postgres would refuse or could not read back, and these tests hold it
to the real servers: the per-backend tests run once per backend face, and a
property test compares memory, SQLite, Postgres and Supabase on generated
documents.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal

import orjson
import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import ALL_BACKENDS
from utils.infrastructure.backends.memory_storage import InMemoryStorage
from utils.infrastructure.backends.postgres_storage import PostgresStorage
from utils.infrastructure.backends.sqlite_storage import SQLiteStorage
from utils.infrastructure.backends.supabase_storage import SupabaseStorage
from utils.infrastructure.contract import json_numbers
from utils.infrastructure.contract.errors import StorageError, StorageValueError
from utils.infrastructure.contract.json_numbers import check_numbers
from utils.infrastructure.contract.validation import DEFAULT_MAX_VALUE_BYTES, check_value

PRINTS_NUMBERS = {name for name in ALL_BACKENDS if "postgres" in name or "supabase" in name}


def as_decimals(text: str) -> object:
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


# What Postgres does with each, before the rule: refuses it (22003), or stores
# it and prints it so long that reads exceed the limit or run out of memory.
REFUSED_EVERYWHERE = {
    "1e-16384: Postgres refused it": "1e-16384",
    "1e-16383: read back as 16,385 bytes": "1e-16383",
    "9 KB: read back as 16.4 MB": "[" + ",".join(["1e-16383"] * 1000) + "]",
    "630 KB: stored, every read out of memory": "[" + ",".join(["1e-16383"] * 70_000) + "]",
    "zeros reading back as 9.8 MB": "[" + ",".join(["0e-16383"] * 600) + "]",
    "0e-16384: more than 16383 digits after the point": "0e-16384",
    "an exponent numeric refuses even on 0": "0e1073741823",
    "16384 digits after the point": "0." + "1" * 16384,
    "above a double's range (orjson)": "1" * 400,
}

# Accepted everywhere; Postgres's text on the right.
ACCEPTED = {
    "1.0E+2": "100",
    "1.50": "1.50",
    "1e-5": "0.00001",
    "-6.499000889708029e+16": "-64990008897080290",
    "-0": "0",
    "-0.0": "0.0",
    "1e308": "1" + "0" * 308,
    "5e-324": "0." + "0" * 323 + "5",
    "0e-16383": "0." + "0" * 16383,
    "0." + "1" * 16383: "0." + "1" * 16383,
    "9" * 308: "9" * 308,
    '{"t": 0.0, "n": [1e-5, 2.5E3]}': '{"n": [0.00001, 2500], "t": 0.0}',
}


@pytest.mark.parametrize("document", REFUSED_EVERYWHERE.values(), ids=REFUSED_EVERYWHERE.keys())
def test_numbers_postgres_cannot_hold_or_read_back_are_refused_everywhere(backend, document):
    with pytest.raises(StorageValueError):
        backend.storage.setex("thread:numbers", 60, document)
    with pytest.raises(StorageValueError):
        backend.storage.update("thread:numbers", lambda _: document, 60)
    assert backend.storage.get("thread:numbers") is None


@pytest.mark.parametrize("document", ACCEPTED, ids=lambda d: d[:30])
def test_accepted_numbers_read_back_equal_in_value(backend, document):
    backend.storage.setex("thread:numbers", 60, document)
    got = backend.storage.get("thread:numbers")
    assert got == (ACCEPTED[document] if backend.name in PRINTS_NUMBERS else document)
    assert as_decimals(got) == as_decimals(document)


def test_numbers_as_printed_count_against_the_limit(backend):
    backend.storage.max_value_bytes = 20_000
    fits = json.dumps([1e300] * 60)  # 1e+300 is 6 bytes written, 301 printed
    backend.storage.setex("thread:big", 60, fits)
    got = backend.storage.get("thread:big")
    assert len(got.encode()) <= 20_000
    assert as_decimals(got) == as_decimals(fits)
    with pytest.raises(StorageValueError, match="read back"):
        backend.storage.setex("thread:big", 60, json.dumps([1e300] * 70))
    assert backend.storage.get("thread:big") == got


def test_spaces_jsonb_adds_count_against_the_limit(backend):
    compact = "[" + ",".join(["0"] * 300) + "]"  # Postgres prints "[0, 0, ...]": 900 bytes
    backend.storage.max_value_bytes = 899
    with pytest.raises(StorageValueError, match="read back"):
        backend.storage.setex("thread:compact", 60, compact)
    backend.storage.max_value_bytes = 900
    backend.storage.setex("thread:compact", 60, compact)
    assert len(backend.storage.get("thread:compact")) == (900 if backend.name in PRINTS_NUMBERS else 601)


def test_metadata_numbers_follow_the_same_rule(backend):
    for metadata in ({"x": [1e300] * 300}, {"n": 10**400}):  # 90 KB printed; beyond a double
        with pytest.raises(StorageValueError):
            backend.storage.set_with_ttl("thread:meta", 60, "{}", metadata=metadata)
    backend.storage.set_with_ttl("thread:meta", 60, "{}", metadata={"tiny": 5e-324, "big": 1e300})
    (info,) = backend.storage.list_threads()
    # Postgres's 301 digits of 1e300 come back as an int.
    assert {k: float(v) for k, v in info.metadata.items()} == {"tiny": 5e-324, "big": 1e300}


# -- the rule's own paths, without a server --------------------------------


def test_long_numbers_and_long_digit_strings():
    for number in (
        "0." + "1" * 16384,
        "1" + "0" * 9000 + "." + "0" * 7400 + "e-9000",  # 1.0, with 16400 digits after the point
    ):
        with pytest.raises(StorageValueError, match="digits after"):
            check_value(f'{{"n": {number}}}', DEFAULT_MAX_VALUE_BYTES)
    check_value(f'{{"n": 0.{"1" * 16383}, "s": "{"1" * 20000}e-99999"}}', DEFAULT_MAX_VALUE_BYTES)


def test_values_a_repeated_key_drops_still_count():
    # Postgres parses them before keeping the last one.
    for document in ('{"a": 0e1073741823, "a": []}', '{"a": [1e-400], "a": 1}'):
        with pytest.raises(StorageValueError, match="holds the number"):
            check_value(document, DEFAULT_MAX_VALUE_BYTES)


@pytest.mark.parametrize("inner, refused", [("1e-400", True), ("0e-5, 2.5, 1e300", False)])
def test_nesting_too_deep_for_the_standard_scanner(inner, refused):
    document = "[" * 1000 + inner + "]" * 1000
    if refused:
        with pytest.raises(StorageValueError, match="too close to 0"):
            check_value(document, DEFAULT_MAX_VALUE_BYTES)
    else:
        check_value(document, DEFAULT_MAX_VALUE_BYTES)
        printed = len("[" * 1000 + "0.00000, 2.5, 1" + "0" * 300 + "]" * 1000)
        check_value(document, printed)
        with pytest.raises(StorageValueError, match="read back"):
            check_value(document, printed - 1)


def _answer(text: str, limit: int, ints: bool) -> str:
    try:
        check_numbers(text, limit, ints=ints)
    except StorageValueError as exc:
        return str(exc)
    return "accepted"


def _answers_both_ways(text: str, limit: int, ints: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """The rule's answer as it is, and with every token read (no shortcut taken)."""
    quick = _answer(text, limit, ints)
    with monkeypatch.context() as patched:
        patched.setattr(json_numbers, "_may_hold_risky", lambda _text: True)
        read = _answer(text, limit, ints)
    return quick, read


# Texts where a look at the characters, not the tokens, could be mistaken.
LOOKALIKES = [
    '{"a": "1e-400"}',  # an exponent only inside a string
    '{"a": "x, 1e-400, 2E+999"}',  # one a value would follow, inside a string
    '{"a": "x\\", 1e-400, \\"", "b": 1}',  # ... behind an escaped quote
    '{"a": "\\\\", "b": 1e-400}',  # an escaped backslash ends the string: a token
    '{"a": 1e-400, "a": 1}',  # under a repeated key, dropped by every reader
    '{"a": [1, 2], "a": {"b": -1E-400}}',
    '{"e3e70682": "e3e70682-c209-4cac-629f-6fbed82c07cd", "n": 3e-400}',
    '{"\\u00e9": "caf\\u00e9", "n": 1234}',
    "1e-400",
    "-1e-400",
    " \n1E-400 ",
    "[\n\t-2.5e-400]",
    "[0,-0.0e-16384]",
    '{"a":\r\n 1e400}',
    '{"n": 1.5, "t": true, "f": false, "z": null, "e": -0.25}',
    '{"long": "' + "1" * 400 + '", "n": 1}',
    '{"long": ' + "1" * 400 + "}",
    '{"long": -' + "1" * 299 + "}",
    '{"long": ' + "1" * 299 + ".5}",
    "[" + "0." + "0" * 330 + "1]",
    '["1-2e3", "-e", "0e", 12e3]',
]


@pytest.mark.parametrize("text", LOOKALIKES)
@pytest.mark.parametrize("limit", [40, DEFAULT_MAX_VALUE_BYTES])
@pytest.mark.parametrize("ints", [True, False])
def test_the_shortcut_answers_as_reading_every_token(text, limit, ints, monkeypatch):
    json.loads(text)  # each is JSON
    quick, read = _answers_both_ways(text, limit, ints, monkeypatch)
    assert quick == read


def test_the_shortcut_finds_exponents_wherever_a_value_starts():
    for text in ('{"a": 1e5}', "[1e5]", "[0, 1E5]", '{"a":\n -1.0e-5}', "1e5", " 1e5", "[" * 5 + "2e0" + "]" * 5):
        assert json_numbers._may_hold_risky(text), text
    assert json_numbers._may_hold_risky("[" + "9" * 300 + "]")
    for text in ('{"a": "e3e7", "b": 0.5, "c": [1234, -567]}', '"caf\\u00e9 b3e"', "[" + "9" * 299 + "]"):
        assert not json_numbers._may_hold_risky(text), text


# -- generated documents ----------------------------------------------------

_digits = st.text("0123456789", min_size=1, max_size=25)
_whole = st.one_of(
    st.just("0"),
    st.builds(str.__add__, st.sampled_from("123456789"), st.text("0123456789", max_size=25)),
    st.builds(str.__mul__, st.sampled_from("19"), st.sampled_from([307, 308, 309])),
    st.just("1").map(lambda one: one + "0" * 8999),
)
_fraction = st.one_of(
    st.none(),
    _digits,
    st.builds(
        lambda zeros, tail: "0" * zeros + tail, st.sampled_from([300, 322, 323, 330, 16380]), _digits
    ),
    st.builds(str.__mul__, st.just("1"), st.sampled_from([16383, 16384])),
)
_exponent = st.one_of(
    st.none(),
    st.builds(
        lambda mark, sign, pad, size: f"{mark}{sign}{'0' * pad}{size}",
        st.sampled_from("eE"),
        st.sampled_from(["", "+", "-"]),
        st.sampled_from([0, 0, 0, 3]),
        st.one_of(
            st.integers(0, 40),
            st.integers(295, 330),
            st.integers(16375, 16390),
            st.sampled_from([1073741822, 1073741823, 10**15]),
        ),
    ),
)
NUMBERS = st.builds(
    lambda sign, whole, fraction, exp: sign + whole + (f".{fraction}" if fraction else "") + (exp or ""),
    st.sampled_from(["", "-"]),
    _whole,
    _fraction,
    _exponent,
)
STRINGS = st.one_of(
    st.builds(json.dumps, st.text(max_size=12), ensure_ascii=st.booleans()),
    # Numbers, quotes and NULs inside strings are no numbers.
    st.sampled_from(
        ['"1e-16384"', '"[1e300, 0e-16383]"', '"a\\"1e-400\\",1e-400"', '"\\u0000 1e-400"', '"\\/\\u00e9"']
    ),
)
_SCALARS = st.one_of(NUMBERS, STRINGS, st.sampled_from(["true", "false", "null"]))
_SPACE = st.sampled_from(["", " ", "\n  "])
_KEYS = st.sampled_from(['"a"', '"b"', '"ключ"'])  # few, so objects repeat keys


def _array(items, space):
    return "[" + f",{space}".join(items) + "]"


def _object(pairs, space):
    return "{" + f",{space}".join(f"{key}:{space}{value}" for key, value in pairs) + "}"


DOCUMENTS = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.builds(_array, st.lists(children, max_size=5), _SPACE),
        st.builds(_object, st.lists(st.tuples(_KEYS, children), max_size=4), _SPACE),
        # The same number many times: reaches the read-back limit cheaply.
        st.builds(lambda n, count, space: _array([n] * count, space), NUMBERS, st.integers(1, 150), _SPACE),
    ),
    max_leaves=8,
)
LIMIT = 40_000  # room for 16383 digits after the point, three 0e-16383 too many


def _outcome(store, document: str) -> str:
    try:
        store.setex("thread:generated", 60, document)
    except StorageError as exc:
        return type(exc).__name__
    return "stored"


def test_every_backend_accepts_and_reads_back_the_same_documents(tmp_path, postgres_dsn, supabase_project):
    stores = {
        "memory": InMemoryStorage(max_value_bytes=LIMIT),
        "sqlite": SQLiteStorage(tmp_path / "threads.sqlite3", max_value_bytes=LIMIT),
        "postgres": PostgresStorage(postgres_dsn, max_value_bytes=LIMIT),
        "supabase": SupabaseStorage(supabase_project.url, supabase_project.secret_key, max_value_bytes=LIMIT),
    }
    outcomes: list[str] = []

    @settings(max_examples=200, deadline=None, database=None)
    @given(DOCUMENTS)
    def differential(document):
        seen = {name: _outcome(store, document) for name, store in stores.items()}
        assert len(set(seen.values())) == 1, seen
        outcomes.append(seen["memory"])
        if seen["memory"] != "stored":
            return
        for name, store in stores.items():
            got = store.get("thread:generated")
            assert len(got.encode()) <= LIMIT, name
            assert as_decimals(got) == as_decimals(document), name

    try:
        differential()
    finally:
        for store in stores.values():
            store.close()
    # Both outcomes must be common, or the comparison proves little.
    assert outcomes.count("stored") >= len(outcomes) // 5, outcomes
    assert len(outcomes) - outcomes.count("stored") >= len(outcomes) // 5, outcomes


@settings(max_examples=300, deadline=None, database=None)
@given(DOCUMENTS, st.sampled_from([300, 3000, LIMIT]))
def test_both_ways_of_reading_numbers_agree(document, limit):
    # Nested too deep for the standard library's scanner, the numbers are
    # found by pattern instead; the answer must not depend on the way.
    deep = "[" * 1000 + document + "]" * 1000
    outcomes = []
    for text, bound in ((document, limit), (deep, limit + 2000)):
        try:
            check_numbers(text, bound)
            outcomes.append("accepted")
        except StorageValueError:
            outcomes.append("refused")
    assert outcomes[0] == outcomes[1]


@settings(max_examples=500, deadline=None, database=None)
@given(DOCUMENTS, st.sampled_from([300, 3000, LIMIT]), st.booleans())
def test_the_shortcut_agrees_with_reading_every_token(document, limit, ints):
    # check_numbers is given texts orjson or the standard library reads;
    # ints=False only for those orjson reads (it refuses larger integers).
    if not ints:
        try:
            orjson.loads(document)
        except orjson.JSONDecodeError:
            return
    with pytest.MonkeyPatch.context() as monkeypatch:
        quick, read = _answers_both_ways(document, limit, ints, monkeypatch)
    assert quick == read


@pytest.fixture(scope="module")
def conn(postgres_server):
    with postgres_server.connect() as conn:
        yield conn


@settings(max_examples=300, deadline=None, database=None)
@given(number=NUMBERS)
def test_the_printed_size_is_postgres_own(conn, number):
    try:
        with conn.transaction():
            printed = conn.execute("select %s::text::jsonb::text", (number,)).fetchone()[0]
    except psycopg.errors.NumericValueOutOfRange:
        with pytest.raises(StorageValueError):
            check_numbers(number, 10**9)
        return
    digits = re.split("[eE]", number)[0].strip("-0.")
    if digits and float(number) in (0.0, float("inf"), float("-inf")):
        # Beyond a double's range: stored by Postgres, refused by the rule.
        with pytest.raises(StorageValueError, match="double"):
            check_numbers(number, 10**9)
        return
    # Exact for a number with an exponent or 300 digits; any other prints as
    # written or shorter ("-0" as "0") and is counted as written.
    risky = "e" in number.lower() or len(number.lstrip("-")) >= 300
    bound = len(printed) if risky else len(number)
    assert len(printed) <= bound
    check_numbers(number, bound)
    with pytest.raises(StorageValueError, match="read back"):
        check_numbers(number, bound - 1)
