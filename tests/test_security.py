"""Security: refused credentials touch nothing, hostile strings stay data, the catalog passes the linter's rules."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support.local_supabase import make_key

# Every function of sql/, with arguments that would succeed for service_role.
CALLS = [
    ("thread_set", {"p_thread_id": "thread:target", "p_data": '{"overwritten": true}', "p_ttl_seconds": 60}),
    ("thread_get", {"p_thread_id": "thread:target"}),
    ("thread_delete", {"p_thread_id": "thread:target"}),
    ("cleanup_expired_threads", {"p_batch_size": 1000}),
    ("storage_health", {}),
    ("thread_list", {}),
    ("thread_touch", {"p_thread_id": "thread:target", "p_ttl_seconds": 1}),
    ("delete_user_threads", {"p_user_id": "victim"}),
    ("thread_stats", {}),
    ("delete_user_threads_batch", {"p_user_id": "victim", "p_batch_size": 10}),
    ("thread_fill_sizes", {"p_batch_size": 10}),
    ("thread_get_versioned", {"p_thread_id": "thread:target"}),
    ("thread_set_if_version", {"p_thread_id": "thread:new", "p_data": "{}", "p_ttl_seconds": 60,
                               "p_expected_version": 0}),
    ("thread_put", {"p_thread_id": "thread:target", "p_data": '{"overwritten": true}', "p_ttl_seconds": 60}),
    ("thread_fetch", {"p_thread_id": "thread:target", "p_known_version": 0}),
    ("thread_patch", {"p_thread_id": "thread:target", "p_base_version": 1, "p_patch": "[]", "p_size_bytes": 2,
                      "p_ttl_seconds": 60}),
    ("conversation_storage_apply_patch", {"p_doc": {}, "p_patch": []}),
    ("thread_set_if_version_before", {"p_deadline": "2999-01-01T00:00:00Z", "p_thread_id": "thread:new",
                                      "p_data": "{}", "p_ttl_seconds": 60, "p_expected_version": 0}),
    ("thread_delete_before", {"p_deadline": "2999-01-01T00:00:00Z", "p_thread_id": "thread:target"}),
    ("thread_replay", {"p_thread_id": "thread:target", "p_op": "delete", "p_written_at": "2999-01-01T00:00:00Z"}),
]

BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"


def _as_sdk(key: str) -> dict[str, str]:
    """Headers as supabase-py sends a key: apikey and the same key as Bearer token."""
    return {"apikey": key, "Authorization": f"Bearer {key}"}


# Each refused by the API gateway (no or unknown apikey, secret key from a
# browser), by PostgREST (bad tokens) or by the database (no EXECUTE for the role).
CREDENTIALS = {
    "anon key": lambda p: _as_sdk(p.anon_key),
    "publishable key": lambda p: _as_sdk(p.publishable_key),
    "authenticated user": lambda p: {"apikey": p.anon_key, "Authorization": f"Bearer {p.authenticated_key}"},
    "user with publishable key": lambda p: {"apikey": p.publishable_key,
                                            "Authorization": f"Bearer {p.authenticated_key}"},
    "user token as apikey": lambda p: {"apikey": p.authenticated_key},
    "no key": lambda p: {},
    "token without apikey": lambda p: {"Authorization": f"Bearer {p.service_role_key}"},
    "guessed secret key": lambda p: _as_sdk("sb_secret_" + "A" * 32),
    "secret key from a browser": lambda p: {**_as_sdk(p.secret_key), "User-Agent": BROWSER},
    "forged service_role key": lambda p: _as_sdk(make_key("service_role", secret="x" * 40)),
    "forged token, anon key": lambda p: {"apikey": p.anon_key,
                                         "Authorization": f"Bearer {make_key('service_role', secret='x' * 40)}"},
    "expired token, publishable key": lambda p: {
        "apikey": p.publishable_key, "Authorization": f"Bearer {make_key('service_role', expires_in=-3600)}"},
    "unknown service_role JWT": lambda p: _as_sdk(make_key("service_role")),
}


def _snapshot(project):
    with project.connect() as conn:
        return conn.execute(
            "select thread_id, conversation_data, user_id, expires_at, version from public.conversation_threads"
            " order by thread_id"
        ).fetchall()


@pytest.mark.parametrize("credential", CREDENTIALS)
def test_every_function_is_refused_and_nothing_is_read_or_written(supabase_project, credential):
    with supabase_project.connect() as conn:
        conn.execute(
            "insert into public.conversation_threads (thread_id, user_id, conversation_data, expires_at)"
            " values ('thread:target', 'victim', '{\"secret\": 42}', now() + interval '1 hour'),"
            "        ('thread:old', 'victim', '{}', now() - interval '1 hour')"
        )
    before = _snapshot(supabase_project)
    headers = CREDENTIALS[credential](supabase_project)
    with httpx.Client(base_url=supabase_project.url) as client:
        for function, body in CALLS:
            response = client.post(f"/rest/v1/rpc/{function}", json=body, headers=headers)
            assert response.status_code in (401, 403), (function, response.status_code, response.text)
            assert "42" not in response.text.replace("42501", ""), f"{function} leaked data"
            assert set(response.json()) >= {"message"}, "the refusal says why"
    assert _snapshot(supabase_project) == before


HOSTILE = [
    "thread:'; drop table public.conversation_threads; --",
    'thread:" or 1=1 --',
    "thread:$$; select pg_sleep(5); $$",
    "thread:%s %(p_thread_id)s {} \\x00",
    "thread:\u202eevil\u200b\ufeff",
    "thread:" + "🤖" * 120,  # 487 bytes of 4-byte characters
    "thread:" + "x" * 505,
]


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_strings_are_stored_and_returned_literally(backend, text):
    text = text.replace("\\x00", "")  # a NUL is refused, tested elsewhere
    metadata = {"note": text, text[:100]: "as a key"}
    value = json.dumps({"content": text})
    backend.storage.set_with_ttl(text, 60, value, user_id=text[:200], metadata=metadata)
    assert json.loads(backend.storage.get(text)) == {"content": text}
    [info] = backend.storage.list_threads(user_id=text[:200])
    assert (info.key, info.metadata) == (text, metadata)
    assert backend.storage.touch(text, 60) is True
    assert backend.storage.delete(text) is True
    assert backend.storage.stats()["live"] == 0  # the table is still there and empty


def test_catalog_follows_the_supabase_linter_rules(supabase_project):
    with supabase_project.connect() as conn:
        rls = conn.execute(
            "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
            " where n.nspname = 'public' and c.relkind = 'r' and not c.relrowsecurity"
        ).fetchall()
        keyless = conn.execute(
            "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
            " where n.nspname = 'public' and c.relkind = 'r'"
            " and not exists (select 1 from pg_constraint k where k.conrelid = c.oid and k.contype = 'p')"
        ).fetchall()
        always_true = conn.execute(
            "select policyname from pg_policies where schemaname = 'public'"
            " and (qual = 'true' or with_check = 'true')"
        ).fetchall()
        functions = conn.execute(
            """
            select p.oid::regprocedure::text, p.prosecdef, p.proconfig,
                   has_function_privilege('anon', p.oid, 'EXECUTE'),
                   has_function_privilege('authenticated', p.oid, 'EXECUTE'),
                   exists (select 1 from aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                           where a.grantee = 0 and a.privilege_type = 'EXECUTE')
              from pg_proc p join pg_namespace n on n.oid = p.pronamespace
             where n.nspname = 'public'
            """
        ).fetchall()
    assert rls == [], "every table in public has row level security on"
    assert keyless == [], "every table in public has a primary key (the linter's no_primary_key)"
    assert always_true == []
    assert len(functions) >= 11
    for name, definer, config, anon, authenticated, public in functions:
        assert any(c.startswith("search_path=") for c in (config or [])), f"{name}: search_path not fixed"
        # The one definer reads pg_cron's job table, which only its owner may (see sql/008).
        assert not definer or name == "conversation_storage_cleanup_job_scheduled()", f"{name}: SECURITY DEFINER"
        assert not (anon or authenticated or public), f"{name}: executable by PUBLIC/anon/authenticated"


@pytest.mark.parametrize(
    ("credential", "status"),
    [("anon key", 401), ("publishable key", 401), ("authenticated user", 403)],
)
def test_the_api_roles_are_refused_by_postgres_for_lack_of_execute(supabase_project, credential, status):
    """The refusal is the function's privilege, not a role setting the request could not apply."""
    headers = CREDENTIALS[credential](supabase_project)
    with httpx.Client(base_url=supabase_project.url) as client:
        for function, body in CALLS:
            response = client.post(f"/rest/v1/rpc/{function}", json=body, headers=headers)
            assert response.status_code == status, (function, response.text)
            assert response.json()["code"] == "42501"
            assert response.json()["message"] == f"permission denied for function {function}"
