"""The contract every backend keeps. Each test runs once per backend."""

from __future__ import annotations

import json
import reprlib
import threading
from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time

from tests.conftest import ALL_BACKENDS
from tests.support.documents import conversation_document, document_of_size
from utils.infrastructure.contract.errors import (
    StorageClosedError,
    StorageConflictError,
    StorageTypeError,
    StorageValueError,
)
from utils.infrastructure.contract.json_envelope import MARKER


def test_get_returns_what_was_set(backend):
    document = conversation_document(turns=4)
    backend.storage.set_with_ttl("thread:a", 60, document)
    assert json.loads(backend.storage.get("thread:a")) == json.loads(document)


def test_get_of_missing_key_is_none(backend):
    assert backend.storage.get("thread:missing") is None


def test_setex_is_set_with_ttl_in_redis_argument_order(backend):
    backend.storage.setex("thread:b", 60, '{"turns": [1, 2]}')
    assert json.loads(backend.storage.get("thread:b")) == {"turns": [1, 2]}


def test_set_replaces_the_value(backend):
    backend.storage.setex("thread:c", 60, '{"v": 1}')
    backend.storage.setex("thread:c", 60, '{"v": 2}')
    assert json.loads(backend.storage.get("thread:c")) == {"v": 2}


@pytest.mark.parametrize("document", ["null", "0", '"text"', "[]", "{}", "true", '{"nested": {"a": [1, 2.5, null]}}'])
def test_any_json_document_round_trips(backend, document):
    backend.storage.setex("thread:doc", 60, document)
    stored = backend.storage.get("thread:doc")
    assert stored is not None, "a stored JSON null must not read back as missing"
    assert json.loads(stored) == json.loads(document)


# -- any str: JSON is kept as JSON, every other text exactly ---------------------


def test_a_health_probe_writes_and_reads_plain_text(backend):
    # EX-AI-MCP-Server's health check: a Redis-style write of text that is not JSON.
    backend.storage.setex("health:probe", 5, "test_value")
    assert backend.storage.get("health:probe") == "test_value"
    assert backend.peer.get("health:probe") == "test_value"


TEXTS = {
    "empty": "",
    "whitespace only": " \t\n ",
    "NUL characters": "tool output\x00binary\x00\x00end",
    "only a NUL": "\x00",
    "quotes and backslashes": 'say "hi" \\ C:\\dir\\ \\"x\\" \\u0000 \\n "',
    "the marker itself": MARKER,
    "an envelope cut short": '{"' + MARKER + '": "x"',
    "JSON-like, not JSON": "{'role': 'user', 'tokens': NaN}",
    "lines, non-ASCII": "naïve ✓ 日本語 🤖\r\n\tline two\u2028",
    "a number, then words": "42 apples",
}


@pytest.mark.parametrize("text", TEXTS.values(), ids=TEXTS.keys())
def test_any_text_round_trips_exactly(backend, text):
    backend.storage.setex("thread:text", 60, text)
    assert backend.storage.get("thread:text") == text
    assert backend.storage.get("thread:text") == text  # again: the near cache's copy, confirmed
    assert backend.peer.get("thread:text") == text


def test_text_and_values_that_read_like_its_envelope_are_never_confused(backend):
    values = {
        "thread:text": "test_value",
        "thread:its-envelope": '{"' + MARKER + '": "test_value"}',
        "thread:pieces-envelope": '{"' + MARKER + '": ["a", "b"]}',
        "thread:pieces": "a\x00b",
    }
    for key, value in values.items():
        backend.storage.setex(key, 60, value)
    assert {key: backend.storage.get(key) for key in values} == values
    assert {key: backend.peer.get(key) for key in values} == values


def test_a_thread_moves_between_json_and_text(backend):
    document = conversation_document(turns=4)
    for value in (document, "test_value", document, "plain\x00text", document[:-1], '{"turns": []}'):
        backend.storage.setex("thread:switch", 60, value)
        for reader in (backend.storage, backend.storage, backend.peer):
            got = reader.get("thread:switch")
            assert got == value or value in (document, '{"turns": []}') and json.loads(got) == json.loads(value)


def test_update_reads_and_writes_text(backend):
    backend.storage.setex("thread:text-update", 60, "first\x00line")
    seen = []

    def append_line(current: str | None) -> str:
        seen.append(current)
        return current + "\nsecond"

    written = backend.storage.update("thread:text-update", append_line, 60)
    assert seen == ["first\x00line"], "fn sees the stored text as written"
    assert written == "first\x00line\nsecond"
    assert backend.storage.get("thread:text-update") == written
    assert backend.storage.update("thread:text-update", lambda _: "", 60) == ""
    assert backend.peer.get("thread:text-update") == ""


def test_large_text_round_trips_and_the_limit_is_the_callers_text(backend):
    cut_short = document_of_size(2_300_000)[:-1]  # a thread's JSON, cut off: text
    backend.storage.setex("thread:big-text", 60, cut_short)
    assert backend.storage.get("thread:big-text") == cut_short
    # Quotes, backslashes and NULs make the envelope longer than the text.
    text = '"\\' * 300 + "\x00" * 10
    backend.storage.max_value_bytes = len(text.encode())
    backend.storage.setex("thread:fits", 60, text)
    assert backend.storage.get("thread:fits") == text
    backend.storage.max_value_bytes -= 1
    _assert_nothing_stored(backend, lambda: backend.storage.setex("thread:keep", 60, text), ValueError)


def test_unicode_and_escapes_round_trip(backend):
    document = json.dumps({"text": "naïve ✓ 日本語 🤖 \u001b[31m red \t tab \\ backslash \"quote\"", "\u00e9": 1})
    backend.storage.setex("thread:unicode", 60, document)
    assert json.loads(backend.storage.get("thread:unicode")) == json.loads(document)


def test_non_ascii_key(backend):
    key = "thread:ключ-✓"
    backend.storage.setex(key, 60, '{"ok": true}')
    assert json.loads(backend.storage.get(key)) == {"ok": True}


def test_key_of_exactly_512_bytes_is_accepted(backend):
    key = "k" * 510 + "é"  # 512 bytes in UTF-8
    backend.storage.setex(key, 60, "{}")
    assert backend.storage.get(key) == "{}"


def test_largest_realistic_thread_round_trips(backend):
    document = document_of_size(2_300_000)
    assert len(document) > 2_000_000
    backend.storage.setex("thread:big", 60, document)
    assert json.loads(backend.storage.get("thread:big")) == json.loads(document)


def test_entry_expires_after_its_ttl(backend):
    # 3 s, not 1: on a store with a real clock the read that must still find it
    # comes after a round trip, which a loaded machine can stretch past a second.
    backend.storage.setex("thread:ttl", 3, '{"x": 1}')
    assert backend.storage.get("thread:ttl") is not None
    backend.advance(3.2)
    assert backend.storage.get("thread:ttl") is None


def test_timedelta_ttl(backend):
    # 3 s for the reason given in test_entry_expires_after_its_ttl.
    backend.storage.setex("thread:td", timedelta(seconds=3), '{"x": 1}')
    assert backend.storage.get("thread:td") is not None
    backend.advance(3.2)
    assert backend.storage.get("thread:td") is None


def test_a_fraction_of_a_second_in_a_timedelta_ttl_is_rounded_up(backend):
    # 0.3 s would be 0 s, refused, if it were truncated; 1.5 s must last 2 s, not 1.
    backend.storage.setex("thread:short", timedelta(milliseconds=300), '{"x": 1}')
    assert backend.storage.get("thread:short") is not None
    backend.storage.setex("thread:td", timedelta(seconds=1.5), '{"x": 1}')
    # The lifetime the store gave it, on its own clock: "still live at 1.7 s" read
    # with a real clock would need the read to come within 0.3 s of that.
    [td] = [t for t in backend.storage.list_threads() if t.key == "thread:td"]
    assert (td.expires_at - td.accessed_at).total_seconds() == pytest.approx(2, abs=0.01)
    backend.advance(2.2)
    assert backend.storage.get("thread:td") is None


#: Backends whose store keeps a clock of its own (memory's clock is the process's).
STORES_WITH_A_CLOCK = [name for name in ALL_BACKENDS if not name.endswith("memory")]


@pytest.mark.parametrize("backend", STORES_WITH_A_CLOCK, indirect=True)
def test_expiry_follows_the_stores_clock_not_the_clients(backend):
    # A client clock a day ahead (or behind) must not expire or revive anything.
    # 5 s, not 2: both reads must come before it lapses, with room for a slow machine.
    with freeze_time(datetime.now(UTC) + timedelta(days=1), real_asyncio=True):
        backend.storage.setex("thread:clock", 5, '{"a": 1}')
        assert backend.storage.get("thread:clock") is not None
    with freeze_time(datetime.now(UTC) - timedelta(days=1), real_asyncio=True):
        assert backend.storage.get("thread:clock") is not None
    backend.advance(5.2)
    with freeze_time(datetime.now(UTC) - timedelta(days=1), real_asyncio=True):
        assert backend.storage.get("thread:clock") is None


def test_set_replaces_the_ttl_with_a_longer_one(backend):
    backend.storage.setex("thread:longer", 1, '{"v": 1}')
    backend.storage.setex("thread:longer", 60, '{"v": 2}')
    backend.advance(1.2)
    assert json.loads(backend.storage.get("thread:longer")) == {"v": 2}


def test_set_replaces_the_ttl_with_a_shorter_one(backend):
    backend.storage.setex("thread:shorter", 60, '{"v": 1}')
    backend.storage.setex("thread:shorter", 1, '{"v": 2}')
    backend.advance(1.2)
    assert backend.storage.get("thread:shorter") is None


def test_expired_key_can_be_set_again(backend):
    backend.storage.setex("thread:again", 1, '{"v": 1}')
    backend.advance(1.2)
    backend.storage.setex("thread:again", 60, '{"v": 2}')
    assert json.loads(backend.storage.get("thread:again")) == {"v": 2}


def test_delete_reports_whether_a_live_entry_was_removed(backend):
    backend.storage.setex("thread:del", 60, "{}")
    assert backend.storage.delete("thread:del") is True
    assert backend.storage.get("thread:del") is None
    assert backend.storage.delete("thread:del") is False
    assert backend.storage.delete("thread:never") is False


def test_delete_of_expired_entry_is_false(backend):
    backend.storage.setex("thread:gone", 1, "{}")
    backend.advance(1.2)
    assert backend.storage.delete("thread:gone") is False


def test_cleanup_removes_only_expired_entries(backend):
    for i in range(5):
        backend.storage.setex(f"thread:old{i}", 1, "{}")
    backend.storage.setex("thread:live", 60, "{}")
    backend.advance(1.2)
    assert backend.storage.cleanup_expired(batch_size=3) == 3
    assert backend.storage.cleanup_expired(batch_size=3) == 2
    assert backend.storage.cleanup_expired(batch_size=3) == 0
    assert backend.storage.get("thread:live") == "{}"


def test_user_id_and_metadata_are_accepted(backend):
    backend.storage.set_with_ttl("thread:meta", 60, "{}", user_id="user-1", metadata={"tool": "chat", "n": 1})
    assert backend.storage.get("thread:meta") == "{}"


def test_replacing_a_live_thread_keeps_its_user_and_metadata(backend):
    storage = backend.storage
    storage.set_with_ttl("thread:owned", 60, '{"v": 1}', user_id="alice", metadata={"tool": "chat"})
    storage.setex("thread:owned", 60, '{"v": 2}')
    storage.update("thread:owned", lambda _: '{"v": 3}', 60)
    [info] = storage.list_threads(user_id="alice")
    assert (info.key, info.user_id, info.metadata) == ("thread:owned", "alice", {"tool": "chat"})
    assert storage.get("thread:owned") == '{"v": 3}'

    storage.set_with_ttl("thread:owned", 60, "{}", user_id="bob", metadata={"tool": "review"})
    assert storage.list_threads(user_id="alice") == []
    [info] = storage.list_threads(user_id="bob")
    assert info.metadata == {"tool": "review"}


def test_replacing_an_expired_thread_starts_over(backend):
    storage = backend.storage
    storage.set_with_ttl("thread:gone", 1, "{}", user_id="alice", metadata={"tool": "chat"})
    backend.advance(1.2)
    storage.setex("thread:gone", 60, "{}")
    assert storage.list_threads(user_id="alice") == []
    [info] = [t for t in storage.list_threads() if t.key == "thread:gone"]
    assert info.user_id is None
    assert not info.metadata


@pytest.mark.real_clock
def test_concurrent_writers_and_readers(backend):
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(10):
                backend.storage.setex(f"thread:w{n}", 60, json.dumps({"writer": n, "i": i}))
                assert json.loads(backend.storage.get(f"thread:w{n}"))["writer"] == n
        except BaseException as exc:  # noqa: BLE001 (collected and re-raised below)
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert all(json.loads(backend.storage.get(f"thread:w{n}")) == {"writer": n, "i": 9} for n in range(4))


def test_closed_storage_refuses_calls(backend):
    backend.storage.close()
    backend.storage.close()  # idempotent
    with pytest.raises(StorageClosedError):
        backend.storage.get("thread:x")
    with pytest.raises(StorageClosedError):
        backend.storage.setex("thread:x", 60, "{}")


def test_context_manager_closes(backend):
    with backend.storage as storage:
        storage.setex("thread:cm", 60, "{}")
    assert storage.closed


def test_shutdown_is_close(backend):
    backend.storage.shutdown()
    assert backend.storage.closed


# -- bad input: a clear exception, and nothing stored --------------------------

BAD_KEYS = [
    (None, TypeError),
    (123, TypeError),
    (b"thread:bytes", TypeError),
    ("", ValueError),
    ("k" * 513, ValueError),
    ("é" * 257, ValueError),  # 257 characters, 514 bytes
    ("thread:\x00nul", ValueError),
    ("thread:\ud800", ValueError),  # lone surrogate: not encodable as UTF-8
]

# Wrong type (bool included: an int subclass, but never meant as a lifetime)
# is a TypeError; the right type with an unusable value a ValueError.
BAD_TTLS = [
    (0, ValueError),
    (-1, ValueError),
    (True, TypeError),
    (False, TypeError),
    (1.5, TypeError),
    (60.0, TypeError),
    (float("nan"), TypeError),
    ("60", TypeError),
    (None, TypeError),
    (timedelta(0), ValueError),
    (timedelta(seconds=-5), ValueError),
    (2**31, ValueError),
    (timedelta(days=30_000), ValueError),
]

# Any str is a value (test_any_text_round_trips_exactly, tests/test_nul_documents.py).
BAD_VALUES = [
    (None, TypeError),
    (b"{}", TypeError),
    (b"test_value", TypeError),
    ({"a": 1}, TypeError),
    ('"\ud800"', ValueError),  # raw lone surrogate: UTF-8 cannot encode it
    ("text \udcff text", ValueError),
    ("[1e400]", ValueError),  # JSON with a number beyond a double (tests/test_json_numbers.py)
]


#: The tables name the built-in class a caller catches; README promises the library's own class
#: for each. Checking the built-in alone would let StorageConfigurationError (also a ValueError) pass.
PROMISED = {TypeError: StorageTypeError, ValueError: StorageValueError}


def _assert_nothing_stored(backend, call, expected):
    backend.storage.setex("thread:keep", 60, '{"kept": true}')
    with pytest.raises(PROMISED[expected]) as info:
        call()
    assert isinstance(info.value, expected)
    assert str(info.value), "the error says what is wrong"
    assert json.loads(backend.storage.get("thread:keep")) == {"kept": True}


@pytest.mark.parametrize(("key", "expected"), BAD_KEYS, ids=repr)
def test_bad_key_is_refused(backend, key, expected):
    _assert_nothing_stored(backend, lambda: backend.storage.setex(key, 60, "{}"), expected)
    with pytest.raises(PROMISED[expected]):
        backend.storage.get(key)
    with pytest.raises(PROMISED[expected]):
        backend.storage.delete(key)


@pytest.mark.parametrize(("ttl", "expected"), BAD_TTLS, ids=repr)
def test_bad_ttl_is_refused(backend, ttl, expected):
    _assert_nothing_stored(backend, lambda: backend.storage.setex("thread:keep", ttl, '{"new": 1}'), expected)


@pytest.mark.parametrize(("value", "expected"), BAD_VALUES, ids=repr)
def test_bad_value_is_refused(backend, value, expected):
    _assert_nothing_stored(backend, lambda: backend.storage.setex("thread:keep", 60, value), expected)


def test_value_over_the_size_limit_is_refused(backend):
    backend.storage.max_value_bytes = 1000
    fits = json.dumps({"t": "x" * 991})
    assert len(fits.encode()) == 1000
    backend.storage.setex("thread:fits", 60, fits)
    too_big = json.dumps({"t": "é" * 496}, ensure_ascii=False)
    assert len(too_big) < 1000 < len(too_big.encode())
    _assert_nothing_stored(backend, lambda: backend.storage.setex("thread:keep", 60, too_big), ValueError)


def _circular() -> dict:
    metadata: dict = {}
    metadata["self"] = metadata
    return metadata


def _nested(depth: int) -> dict:
    metadata: dict = {}
    for _ in range(depth):
        metadata = {"a": metadata}
    return metadata


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"user_id": 5}, TypeError),
        ({"user_id": ""}, ValueError),
        ({"metadata": "tool=chat"}, TypeError),
        ({"metadata": ["a"]}, TypeError),
        ({"metadata": {"when": object()}}, TypeError),
        ({"metadata": {"tags": {"a", "b"}}}, TypeError),
        ({"metadata": {(1, 2): "tuple key"}}, TypeError),
        ({"metadata": {"x": float("nan")}}, ValueError),  # as NaN in the value
        ({"metadata": {"x": [float("inf")]}}, ValueError),
        ({"metadata": {"x": -float("inf")}}, ValueError),
        ({"metadata": _circular()}, ValueError),
        ({"metadata": _nested(5000)}, ValueError),
        ({"metadata": {"x": "\x00"}}, ValueError),
        ({"metadata": {"\x00": 1}}, ValueError),
        ({"metadata": {"x": "y" * 70_000}}, ValueError),
    ],
    ids=reprlib.repr,  # plain repr recurses through the deeply nested one
)
def test_bad_user_id_or_metadata_is_refused(backend, kwargs, expected):
    _assert_nothing_stored(
        backend, lambda: backend.storage.set_with_ttl("thread:keep", 60, '{"new": 1}', **kwargs), expected
    )


# -- listing, touch, per-user erase, statistics --------------------------------


def test_list_threads_reports_live_threads_most_recently_accessed_first(backend):
    storage = backend.storage
    storage.set_with_ttl("thread:old", 60, '{"n": 1}', user_id="alice", metadata={"tool": "chat"})
    backend.advance(0.02)
    storage.set_with_ttl("thread:new", 60, '{"n": 22}', user_id="bob")
    storage.setex("thread:expiring", 1, "{}")
    backend.advance(1.2)
    storage.touch("thread:old", 60)  # now the most recently accessed

    listed = storage.list_threads()
    assert [t.key for t in listed] == ["thread:old", "thread:new"]
    old = listed[0]
    assert old.user_id == "alice"
    assert old.metadata == {"tool": "chat"}
    assert old.size_bytes == len(storage.get("thread:old").encode())
    assert old.created_at <= old.accessed_at < old.expires_at
    assert 55 < (old.expires_at - old.accessed_at).total_seconds() <= 60.5


def test_list_threads_filters_by_user_and_limits(backend):
    for i in range(3):
        backend.storage.set_with_ttl(f"thread:a{i}", 60, "{}", user_id="alice")
    backend.storage.set_with_ttl("thread:b", 60, "{}", user_id="bob")
    assert sorted(t.key for t in backend.storage.list_threads(user_id="alice")) == [
        "thread:a0", "thread:a1", "thread:a2"
    ]
    assert [t.key for t in backend.storage.list_threads(user_id="bob")] == ["thread:b"]
    assert len(backend.storage.list_threads(limit=2)) == 2
    assert backend.storage.list_threads(limit=0) == []
    assert backend.storage.list_threads(user_id="nobody") == []


def test_touch_extends_a_live_thread_without_rewriting_it(backend):
    # 3 s for the reason given in test_entry_expires_after_its_ttl: it must still be live when touched.
    backend.storage.setex("thread:touched", 3, '{"kept": 1}')
    assert backend.storage.touch("thread:touched", 60) is True
    backend.advance(3.2)
    assert json.loads(backend.storage.get("thread:touched")) == {"kept": 1}


def test_touch_of_missing_or_expired_thread_is_false(backend):
    assert backend.storage.touch("thread:never", 60) is False
    backend.storage.setex("thread:gone", 1, "{}")
    backend.advance(1.2)
    assert backend.storage.touch("thread:gone", 60) is False
    assert backend.storage.get("thread:gone") is None


def test_touch_can_shorten_the_lifetime(backend):
    backend.storage.setex("thread:short", 60, "{}")
    assert backend.storage.touch("thread:short", timedelta(seconds=1)) is True
    backend.advance(1.2)
    assert backend.storage.get("thread:short") is None


def test_delete_user_threads_erases_every_thread_of_that_user_only(backend):
    backend.storage.set_with_ttl("thread:a-expired", 1, "{}", user_id="alice")
    backend.advance(1.2)
    backend.storage.set_with_ttl("thread:a1", 60, "{}", user_id="alice")
    backend.storage.set_with_ttl("thread:a2", 60, "{}", user_id="alice")
    backend.storage.set_with_ttl("thread:b", 60, "{}", user_id="bob")
    backend.storage.setex("thread:nobody", 60, "{}")
    assert backend.storage.delete_user_threads("alice") == 3
    assert backend.storage.get("thread:a1") is None
    assert backend.storage.list_threads(user_id="alice") == []
    assert backend.storage.get("thread:b") == "{}"
    assert backend.storage.get("thread:nobody") == "{}"
    assert backend.storage.delete_user_threads("alice") == 0


def test_stats_count_live_and_expired_entries(backend):
    backend.storage.setex("thread:gone", 1, '{"x": 1}')
    backend.advance(1.2)
    backend.storage.setex("thread:live1", 60, '{"y": 2}')
    backend.storage.setex("thread:live2", 60, "[]")
    stats = backend.storage.stats()
    live_bytes = len(backend.storage.get("thread:live1")) + len(backend.storage.get("thread:live2"))
    assert stats["live"] == 2
    assert stats["expired"] == 1
    assert stats["live_bytes"] == live_bytes
    assert stats["total_bytes"] > live_bytes


def _fail(current):
    raise AssertionError("update must check its arguments before running fn")


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda s: s.list_threads(limit=-1), ValueError),
        (lambda s: s.list_threads(limit=2**31), ValueError),
        (lambda s: s.list_threads(limit="5"), TypeError),
        (lambda s: s.list_threads(limit=True), TypeError),
        (lambda s: s.list_threads(user_id=7), TypeError),
        (lambda s: s.touch("thread:keep", 0), ValueError),
        (lambda s: s.touch("thread:keep", 1.5), TypeError),
        (lambda s: s.touch("", 60), ValueError),
        (lambda s: s.delete_user_threads(None), TypeError),
        (lambda s: s.delete_user_threads(""), ValueError),
        (lambda s: s.cleanup_expired(batch_size=0), ValueError),
        (lambda s: s.cleanup_expired(batch_size=2**31), ValueError),
        (lambda s: s.cleanup_expired(batch_size=10.0), TypeError),
        (lambda s: s.update("thread:keep", None, 60), TypeError),
        (lambda s: s.update("thread:keep", _fail, "60"), TypeError),
        (lambda s: s.update("thread:keep", _fail, 60, metadata={"x": float("nan")}), ValueError),
        (lambda s: s.update("thread:keep", _fail, 60, max_attempts=0), ValueError),
        (lambda s: s.update("thread:keep", _fail, 60, max_attempts="3"), TypeError),
    ],
    ids=[
        "negative limit", "huge limit", "str limit", "bool limit", "int user", "zero ttl", "float ttl",
        "empty key", "None user", "empty user", "zero batch", "huge batch", "float batch", "fn None",
        "update str ttl", "update NaN metadata", "zero attempts", "str attempts",
    ],
)
def test_bad_arguments_of_the_other_operations_are_refused(backend, call, expected):
    _assert_nothing_stored(backend, lambda: call(backend.storage), expected)


# -- atomic read-modify-write ----------------------------------------------------


def _append_turn(turn: str):
    def append(current: str | None) -> str:
        thread = json.loads(current) if current else {"turns": []}
        thread["turns"].append(turn)
        return json.dumps(thread)

    return append


def test_update_creates_then_modifies(backend):
    assert json.loads(backend.storage.update("thread:u", _append_turn("a"), 60)) == {"turns": ["a"]}
    backend.storage.update("thread:u", _append_turn("b"), 60)
    assert json.loads(backend.storage.get("thread:u")) == {"turns": ["a", "b"]}


def test_update_after_expiry_starts_from_nothing(backend):
    backend.storage.update("thread:u", _append_turn("old"), 1)
    backend.advance(1.2)
    backend.storage.update("thread:u", _append_turn("new"), 60)
    assert json.loads(backend.storage.get("thread:u")) == {"turns": ["new"]}


def test_update_retries_when_another_writer_wins(backend):
    backend.storage.setex("thread:race", 60, '{"turns": []}')
    calls = []

    def interfering(current):
        calls.append(current)
        if len(calls) == 1:  # another daemon writes between our read and our write
            backend.peer.setex("thread:race", 60, '{"turns": ["theirs"]}')
        return _append_turn("ours")(current)

    backend.storage.update("thread:race", interfering, 60)
    assert len(calls) == 2
    assert json.loads(backend.storage.get("thread:race")) == {"turns": ["theirs", "ours"]}


def test_update_raises_a_conflict_when_another_writer_wins_every_time(backend):
    backend.storage.setex("thread:lost", 60, '{"turns": []}')
    calls = []

    def always_overtaken(current):
        calls.append(current)
        backend.peer.setex("thread:lost", 60, json.dumps({"turns": [f"theirs-{len(calls)}"]}))
        return _append_turn("ours")(current)

    with pytest.raises(StorageConflictError):
        backend.storage.update("thread:lost", always_overtaken, 60, max_attempts=3)
    assert len(calls) == 3
    assert json.loads(backend.storage.get("thread:lost")) == {"turns": ["theirs-3"]}


def test_update_refuses_bad_output_and_stores_nothing(backend):
    _assert_nothing_stored(backend, lambda: backend.storage.update("thread:keep", lambda _: "\ud800", 60), ValueError)
    _assert_nothing_stored(backend, lambda: backend.storage.update("thread:keep", lambda _: None, 60), TypeError)


@pytest.mark.real_clock
def test_concurrent_updates_lose_no_turn(backend):
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(10):
                backend.storage.update("thread:busy", _append_turn(f"{n}-{i}"), 60)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    turns = json.loads(backend.storage.get("thread:busy"))["turns"]
    assert sorted(turns) == sorted(f"{n}-{i}" for n in range(6) for i in range(10))
    for n in range(6):  # each writer's turns stay in its own order
        mine = [t for t in turns if t.startswith(f"{n}-")]
        assert mine == [f"{n}-{i}" for i in range(10)]
