"""The near cache saves bytes and never changes an answer.

Two daemons share a store. Whatever they do, in whatever order, every call
answers byte for byte what it answers without the cache, and the store ends
the same; and a thread that did not change crosses the wire as a version.
"""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from scripts.benchmarks.network_proxy import ShapingProxy
from tests.support.documents import conversation_document, next_turn
from tests.support.outside_writer import OutsideWriter
from utils.infrastructure.backends.postgres_storage import PostgresStorage
from utils.infrastructure.backends.supabase_storage import SupabaseStorage
from utils.infrastructure.contract.errors import StorageUnavailableError
from utils.infrastructure.remote.near_cache import NearCache

TTL = 3600


def _open(kind: str, request, cache) -> object:
    if kind in ("postgres", "pgbouncer"):
        return PostgresStorage(request.getfixturevalue(f"{kind}_dsn"), transaction_pooler=kind == "pgbouncer",
                               max_size=2, near_cache=cache)
    project = request.getfixturevalue("supabase_project")
    return SupabaseStorage(project.url, project.secret_key, near_cache=cache)


@pytest.fixture(params=["postgres", "pgbouncer", "supabase"])
def daemons(request):
    """Two daemons with a near cache each (patching every write of a thread they hold), two without."""
    opened = {
        "cached": [_open(request.param, request, NearCache(patch_min_chars=0)) for _ in range(2)],
        "plain": [_open(request.param, request, False) for _ in range(2)],
    }
    if request.param == "supabase":
        conn = request.getfixturevalue("supabase_project").connect()
    else:
        conn = psycopg.connect(request.getfixturevalue("postgres_dsn"), autocommit=True)
    with conn:
        yield {**opened, "outside": OutsideWriter(conn)}
    for group in opened.values():
        for storage in group:
            storage.close()


# -- two daemons, any interleaving ------------------------------------------------------------

KEYS = ["a", "b"]
#: "edit": an operator's SQL changes the document; "backup" / "restore": the
#: database goes back to a copy taken earlier (at the start if none was).
ACTIONS = ["get", "turn", "turn", "respell", "replace", "delete", "update", "edit", "backup", "restore"]
STEPS = st.lists(st.tuples(st.integers(0, 1), st.sampled_from(ACTIONS), st.sampled_from(KEYS)), max_size=20)


def _act(storage, outside: OutsideWriter, prefix: str, key: str, action: str, step: int):
    """One daemon's call, pal-style where it writes, or the world's; returns what the caller saw."""
    if action == "edit":
        return outside.edit(key, step)
    if action in ("backup", "restore"):
        return getattr(outside, action)(prefix)
    if action == "get":
        return storage.get(key)
    if action == "delete":
        return storage.delete(key)
    if action == "update":
        return storage.update(key, lambda current: next_turn(current or conversation_document(2)), TTL)
    if action == "turn":  # pal's add_turn: read, append, write back
        current = storage.get(key)
        new = next_turn(current) if current else conversation_document(2, seed=step)
    elif action == "respell":  # one number written otherwise: the same double, another numeric
        new = '{"turns": [{"role": "user"}, {"role": "assistant"}], "t": ' + ["1", "1.0", "1e0", "10E-1"][step % 4] + "}"
    else:
        new = conversation_document(3, seed=step)
    storage.setex(key, TTL, new)
    return new


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
# What versions that an edit left alone, or a restore handed out again, let through:
# a stale read after an edit; a patch merged into an edited row; a stale read after a restore.
@example(steps=[(0, "turn", "a"), (0, "get", "a"), (0, "edit", "a"), (0, "get", "a")])
@example(steps=[(0, "turn", "a"), (0, "get", "a"), (0, "edit", "a"), (0, "replace", "a")])
@example(steps=[(0, "backup", "a"), (0, "turn", "a"), (0, "get", "a"), (0, "restore", "a"),
                (1, "replace", "a"), (0, "get", "a")])
def test_two_daemons_see_the_same_with_and_without_the_cache(daemons, steps):
    prefix = f"thread:{uuid.uuid4()}:"
    seen = {}
    outside = daemons["outside"]
    for world in ("cached", "plain"):
        log = []
        outside.backup(prefix + world)
        for step, (who, action, key) in enumerate(steps):
            log.append(_act(daemons[world][who], outside, prefix + world, prefix + world + key, action, step))
        reader = daemons["plain"][0]
        log += [reader.get(prefix + world + key) for key in KEYS]
        seen[world] = log
    assert seen["cached"] == seen["plain"]


# -- what other daemons do is seen at once ----------------------------------------------------

def test_a_write_by_another_daemon_is_read_at_once(daemons):
    mine, theirs = daemons["cached"]
    key = f"thread:{uuid.uuid4()}"
    mine.setex(key, TTL, conversation_document(10))
    assert json.loads(mine.get(key))["turns"]
    changed = next_turn(theirs.get(key))
    theirs.setex(key, TTL, changed)
    assert mine.get(key) == daemons["plain"][0].get(key)
    assert len(json.loads(mine.get(key))["turns"]) == 11


def test_a_thread_deleted_and_written_again_is_never_served_from_an_old_copy(daemons):
    # Before versions came from one sequence, the new thread's first version
    # was the old one's, and the old copy matched it.
    mine, theirs = daemons["cached"]
    key = f"thread:{uuid.uuid4()}"
    mine.setex(key, TTL, '{"turns": ["old"]}')
    assert mine.get(key) == '{"turns": ["old"]}'
    assert theirs.delete(key)
    theirs.setex(key, TTL, '{"turns": ["new"]}')
    assert mine.get(key) == '{"turns": ["new"]}'
    assert theirs.delete(key)
    assert mine.get(key) is None


def test_a_patch_against_a_version_that_moved_on_becomes_a_full_write(daemons):
    mine, theirs = daemons["cached"]
    key = f"thread:{uuid.uuid4()}"
    mine.setex(key, TTL, conversation_document(6))
    theirs.setex(key, TTL, conversation_document(4, seed=9))
    # Mine still holds the 6-turn version and patches against it: refused, so it writes in full.
    written = next_turn(conversation_document(6))
    mine.setex(key, TTL, written)
    assert json.loads(theirs.get(key)) == json.loads(written)


def test_a_write_that_failed_leaves_nothing_held(store):
    # The store goes away between the two writes, so the second fails at the
    # call itself: whether it landed is unknown, and the copy held from the
    # first write may no longer be the store's.
    mine = store.client()
    try:
        key = f"thread:{uuid.uuid4()}"
        mine.setex(key, TTL, conversation_document(2))
        assert mine.near_cache.get(key) is not None
        store.down()
        with pytest.raises(StorageUnavailableError):
            mine.setex(key, TTL, conversation_document(3))
        assert mine.near_cache.get(key) is None
    finally:
        mine.close()


# -- the store's answers --------------------------------------------------------------------

@pytest.fixture
def sql(postgres_server, postgres_dsn):
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        yield lambda query, *args: conn.execute(query, args).fetchone()[0]


def test_fetch_answers_unchanged_only_for_the_live_version_and_its_printing(sql):
    sql("select public.thread_put('thread:f', '{\"b\":1, \"a\":2}', 60)")
    version = sql("select version from public.conversation_threads where thread_id = 'thread:f'")
    printed = '{"a": 2, "b": 1}'
    assert sql("select public.thread_fetch('thread:f', %s)", version) == {"version": version}
    assert sql("select public.thread_fetch('thread:f', %s, md5(%s))", version, printed) == {"version": version}
    assert sql("select public.thread_fetch('thread:f', %s, md5('{\"b\":1,\"a\":2}'))", version) == {
        "version": version, "data": printed}
    assert sql("select public.thread_fetch('thread:f', %s)", version - 1)["data"] == printed
    assert sql("select public.thread_fetch('thread:nothing', 0)") is None


def test_versions_are_never_given_twice_even_to_a_thread_written_again(sql):
    version = "select version from public.conversation_threads where thread_id = 'thread:v'"
    seen = []
    for _ in range(3):
        # The older write functions count version + 1; the trigger draws a new number instead.
        sql("select public.thread_set('thread:v', '{}', 60)")
        seen.append(sql(version))
        sql("select public.thread_set('thread:v', '[]', 60)")
        seen.append(sql(version))
        sql("select public.thread_set_if_version('thread:v', '1', 60, %s)", seen[-1])
        seen.append(sql(version))
        seen.append(int(sql("select (public.thread_put('thread:v', '{}', 60))->>'version'")))
        sql("select public.thread_delete('thread:v')")
    assert len(set(seen)) == len(seen) == 12


def test_touch_keeps_the_version_a_write_moves_it(sql):
    first = sql("select (public.thread_put('thread:t', '{}', 60))->>'version'")
    sql("select public.thread_touch('thread:t', 120)")
    assert sql("select version::text from public.conversation_threads where thread_id = 'thread:t'") == first
    assert sql("select (public.thread_put('thread:t', '{}', 60))->>'version'") != first


# -- bytes on the wire ----------------------------------------------------------------------

def _shaped(postgres_server, postgres_dsn, near_cache):
    with ShapingProxy(postgres_server.port, "LAN 1 ms") as proxy:
        dsn = postgres_dsn.replace(f":{postgres_server.port}/", f":{proxy.port}/")
        assert dsn != postgres_dsn
        with PostgresStorage(dsn, max_size=1, near_cache=near_cache) as storage:
            yield storage, proxy


@pytest.fixture
def shaped_postgres(postgres_server, postgres_dsn):
    """A PostgresStorage whose traffic goes through a counting proxy, with the cache a remote server gets.

    The proxy listens on loopback, where the default is no cache.
    """
    yield from _shaped(postgres_server, postgres_dsn, NearCache())


@pytest.fixture
def shaped_local_postgres(postgres_server, postgres_dsn):
    """The same with the default settings, which see the server is on this machine."""
    yield from _shaped(postgres_server, postgres_dsn, None)


def test_an_unchanged_thread_crosses_the_wire_as_its_version(shaped_postgres):
    storage, proxy = shaped_postgres
    document = conversation_document(50)
    storage.setex("thread:wire", TTL, document)
    storage.get("thread:wire")  # the store confirms this process's printing once
    proxy.reset()
    assert json.loads(storage.get("thread:wire")) == json.loads(document)
    moved = proxy.counters()
    assert moved.bytes_to_client + moved.bytes_to_server < 1000 < len(document) // 100


def test_a_turn_appended_to_a_held_thread_sends_only_the_turn(shaped_postgres):
    storage, proxy = shaped_postgres
    document = conversation_document(50)
    storage.setex("thread:turn", TTL, document)
    proxy.reset()
    new = next_turn(document)
    storage.setex("thread:turn", TTL, new)
    assert proxy.counters().bytes_to_server < (len(new) - len(document)) + 2000
    assert json.loads(storage.get("thread:turn")) == json.loads(new)


def test_a_server_on_this_machine_gets_no_cache_by_default(shaped_local_postgres):
    storage, proxy = shaped_local_postgres
    assert storage.near_cache is None
    document = conversation_document(50)
    storage.setex("thread:local", TTL, document)
    new = next_turn(document)
    proxy.reset()
    storage.setex("thread:local", TTL, new)
    assert proxy.counters().bytes_to_server > len(new)  # whole: finding a patch costs more than loopback's bytes
    for _ in range(2):
        proxy.reset()
        assert json.loads(storage.get("thread:local")) == json.loads(new)
        assert proxy.counters().bytes_to_client > len(new) // 2  # whole, as plain text


@pytest.mark.parametrize("call", [
    "select public.thread_put('thread:late', '{}', 60, p_deadline => now() - interval '1 second')",
    "select public.thread_patch('thread:late', 1, '[]', 2, 60, p_deadline => now() - interval '1 second')",
])
def test_a_write_past_its_deadline_is_not_run(sql, call):
    with pytest.raises(psycopg.errors.QueryCanceled, match="after its deadline"):
        sql(call)
    assert sql("select count(*) from public.conversation_threads where thread_id = 'thread:late'") == 0
