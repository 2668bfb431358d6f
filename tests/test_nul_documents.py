"""Documents holding a NUL (``\\u0000``) round-trip on every backend face.

Part of the conformance suite: each test runs once per backend, sync and
async. PostgreSQL's JSONB cannot hold a NUL, so the Postgres and Supabase
backends store such a document in an envelope (json_envelope.py) and give
back the caller's text byte for byte; memory and SQLite keep every text as
it is. Other documents keep their usual treatment (JSONB may reformat them).
"""

from __future__ import annotations

import json

import pytest

from utils.infrastructure.contract.errors import StorageValueError
from utils.infrastructure.contract.json_envelope import MARKER, to_stored

KEEPS_TEXT = {"memory", "sqlite", "async-memory", "async-sqlite"}

# A NUL anywhere: these come back exactly as written on every backend.
NUL_DOCUMENTS = {
    "nested string": json.dumps({"turns": [{"content": "tool output\u0000 binary \u0000\u0000"}], "n": [1, "\u0000"]}),
    "key name": json.dumps({"\u0000key": 1, "k\u0000": {"\u0000": None}}),
    "only a NUL": '"\\u0000"',
    "formatted, raw UTF-8": '{\n  "text": "naïve ✓ 🤖 \\u0000",\t"list": [ 1 , 2 ]\n}',
    "escaped backslash and a NUL": '"\\\\\\u0000"',  # \\ then \u0000: a backslash, then a NUL
    "marker holding a NUL": json.dumps({MARKER: "\u0000"}),
}
# Documents that read as an envelope if stored as they are: wrapped too, so also exact everywhere.
ENVELOPE_LOOKALIKES = {
    "marker as the only key": json.dumps({MARKER: '{"a": 1}'}),
    "marker spelled with an escape": '{"\\u0024conversation-storage:json-text": "x"}',
    "an envelope itself": to_stored(json.dumps({"a": "\u0000"})),
}
# No NUL, no envelope: stored as usual, so JSON-equal (and exact where the backend keeps text).
ORDINARY_LOOKALIKES = {
    "escaped backslash before u0000": '"\\\\u0000"',  # the text \u0000, not a NUL
    "marker with another key": json.dumps({MARKER: "x", "other": 1}),
    "marker with a number": json.dumps({MARKER: 5}),
    "marker nested": json.dumps({"a": {MARKER: "{}"}}),
}
EXACT_EVERYWHERE = {**NUL_DOCUMENTS, **ENVELOPE_LOOKALIKES}


def _assert_reads_back(backend, got: str | None, document: str, exact: bool) -> None:
    assert got is not None
    assert json.loads(got) == json.loads(document)
    if exact or backend.name in KEEPS_TEXT:
        assert got == document


@pytest.mark.parametrize("document", EXACT_EVERYWHERE.values(), ids=EXACT_EVERYWHERE.keys())
def test_nul_and_envelope_lookalikes_round_trip_exactly(backend, document):
    backend.storage.setex("thread:nul", 60, document)
    _assert_reads_back(backend, backend.storage.get("thread:nul"), document, exact=True)
    # Another client of the same store (another daemon) reads the same text.
    _assert_reads_back(backend, backend.peer.get("thread:nul"), document, exact=True)


@pytest.mark.parametrize("document", ORDINARY_LOOKALIKES.values(), ids=ORDINARY_LOOKALIKES.keys())
def test_documents_that_only_resemble_them_round_trip(backend, document):
    backend.storage.setex("thread:plain", 60, document)
    _assert_reads_back(backend, backend.storage.get("thread:plain"), document, exact=False)


def test_update_reads_and_writes_nul_documents(backend):
    original = NUL_DOCUMENTS["nested string"]
    backend.storage.setex("thread:nul-update", 60, original)
    seen = []

    def append_turn(current: str | None) -> str:
        seen.append(current)
        thread = json.loads(current)
        thread["turns"].append({"content": "more\u0000output"})
        return json.dumps(thread)

    written = backend.storage.update("thread:nul-update", append_turn, 60)
    assert seen == [original], "fn sees the stored text as written"
    _assert_reads_back(backend, backend.storage.get("thread:nul-update"), written, exact=True)
    assert json.loads(written)["turns"][-1] == {"content": "more\u0000output"}


def test_update_of_an_envelope_lookalike(backend):
    backend.storage.update("thread:lookalike", lambda _: ENVELOPE_LOOKALIKES["marker as the only key"], 60)
    written = backend.storage.update("thread:lookalike", lambda current: current, 60)
    assert written == ENVELOPE_LOOKALIKES["marker as the only key"]
    assert backend.storage.get("thread:lookalike") == written


def test_size_limit_applies_to_the_callers_text(backend):
    # Quotes and backslashes make the envelope larger than the text: a
    # document that fits must be stored even so, one byte more must not.
    document = json.dumps({"q": '"\\' * 200 + "\u0000"})
    backend.storage.max_value_bytes = len(document.encode())
    assert len(to_stored(document)) > backend.storage.max_value_bytes
    backend.storage.setex("thread:fits", 60, document)
    assert backend.storage.get("thread:fits") == document
    backend.storage.max_value_bytes -= 1
    with pytest.raises(StorageValueError):
        backend.storage.setex("thread:fits", 60, document)


def test_sizes_report_what_the_store_holds(backend):
    document = NUL_DOCUMENTS["nested string"]
    backend.storage.setex("thread:sized", 60, document)
    # Memory and SQLite hold the caller's text; Postgres and Supabase its envelope.
    held = document if backend.name in KEEPS_TEXT else to_stored(document)
    (info,) = backend.storage.list_threads()
    assert info.size_bytes == len(held.encode())
    assert backend.storage.stats()["live_bytes"] == len(held.encode())
