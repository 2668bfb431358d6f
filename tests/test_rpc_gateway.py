"""The local Supabase API against Supabase's gateway and PostgREST's RPC rules, over real HTTP.

The tests call ``gw_test_*`` helper functions created for this module in the
session's local Supabase stand-in, with plain ``httpx`` requests or the real
supabase-py client: through the emulated API gateway (``/rest/v1/rpc/{fn}``,
with a project key as a client sends it) or, for PostgREST's own rules about
tokens, to bare PostgREST (``/rpc/{fn}``, Authorization only). The expected
answers are PostgREST's documented behaviour or, where the docs are silent,
what its source does (Error.hs, Auth.hs, Plan.hs); the gateway's are what
hosted projects answer (see tests/support/supabase_edge.py). The last tests
check :func:`http_status` directly.
"""

from __future__ import annotations

import ast
import json
import threading
import time
from importlib.metadata import version

import httpx
import jwt
import pytest
from postgrest.exceptions import APIError
from psycopg.conninfo import make_conninfo
from supabase import ClientOptions, create_client

from tests.support.held_api import one_connection_api

# A stand-in of this module's own: its gw_test_* functions must not reach the catalog other tests check.
from tests.support.local_supabase import (
    JWT_SECRET,
    make_key,
    module_local_supabase,  # noqa: F401
)
from tests.support.rpc_gateway import RpcGateway, http_status
from tests.support.supabase_edge import (
    BAD_GATEWAY,
    GATEWAY_TIMEOUT,
    INVALID_API_KEY,
    NO_API_KEY,
    SECRET_KEY_IN_BROWSER,
)
from tests.support.waiting import wait_until

ERROR_KEYS = {"code", "message", "details", "hint"}
JSON_CONTENT_TYPE = "application/json; charset=utf-8"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
LOCK_KEY = 5_201_003  # the advisory lock gw_test_wait_for_lock waits on

SETUP_SQL = """
drop table if exists public.gw_test_scratch;
create table public.gw_test_scratch (id serial primary key, v text not null unique);

drop type if exists public.gw_test_pair_t cascade;
create type public.gw_test_pair_t as (id integer, label text);

create or replace function public.gw_test_add(a integer, b integer) returns integer
    language sql immutable as $$ select a + b $$;

create or replace function public.gw_test_echo(t text) returns text
    language sql immutable as $$ select t $$;

create or replace function public.gw_test_answer() returns integer
    language sql immutable as $$ select 42 $$;

create or replace function public.gw_test_null() returns integer
    language sql immutable as $$ select null::integer $$;

create or replace function public.gw_test_void() returns void
    language plpgsql as $$ begin perform 1; end $$;

create or replace function public.gw_test_series(n integer) returns setof integer
    language sql immutable as $$ select generate_series(1, n) $$;

create or replace function public.gw_test_pairs(n integer) returns table (id integer, label text)
    language sql immutable as $$ select i, 'item-' || i from generate_series(1, n) as i $$;

create or replace function public.gw_test_pair(n integer) returns public.gw_test_pair_t
    language sql immutable as $$ select n, 'item-' || n $$;

create or replace function public.gw_test_defaults(a integer, b integer default 10, c text default 'x')
    returns json language sql immutable as $$ select json_build_object('a', a, 'b', b, 'c', c) $$;

create or replace function public.gw_test_raise() returns integer
    language plpgsql as $$
begin
    raise exception 'boom' using detail = 'some detail', hint = 'some hint';
end $$;

create or replace function public.gw_test_teapot() returns integer
    language plpgsql as $$
begin
    raise sqlstate 'PT418' using message = 'short and stout';
end $$;

create or replace function public.gw_test_pt401() returns integer
    language plpgsql as $$
begin
    raise sqlstate 'PT401' using message = 'sign in first';
end $$;

create or replace function public.gw_test_pgrst() returns integer
    language plpgsql as $$
begin
    raise sqlstate 'PGRST' using
        message = '{"code":"123","message":"Payment Required","details":"Quota exceeded","hint":"Upgrade"}',
        detail = '{"status":402,"headers":{"X-Powered-By":"Nerd Rage"}}';
end $$;

create or replace function public.gw_test_cardinality() returns integer
    language sql stable as $$ select (select i from generate_series(1, 2) as i) $$;

create or replace function public.gw_test_insert(v text) returns void
    language sql as $$ insert into public.gw_test_scratch (v) values (v) $$;

create or replace function public.gw_test_insert_then_raise(v text) returns void
    language plpgsql as $$
begin
    insert into public.gw_test_scratch (v) values (v);
    raise exception 'after insert of %', v;
end $$;

create or replace function public.gw_test_whoami() returns json
    language sql stable as $$
    select json_build_object(
        'user', current_user,
        'sub', current_setting('request.jwt.claims', true)::json ->> 'sub',
        'claims', current_setting('request.jwt.claims', true)::json,
        'statement_timeout', current_setting('statement_timeout'),
        'search_path', current_setting('search_path'),
        'read_only', current_setting('transaction_read_only'),
        'isolation', current_setting('transaction_isolation'))
$$;

create or replace function public.gw_test_tx_mode() returns json
    language sql volatile as $$
    select json_build_object('read_only', current_setting('transaction_read_only'),
                             'isolation', current_setting('transaction_isolation'))
$$;

-- Postgres lets a STABLE function call a volatile one that writes: only the
-- transaction's READ ONLY mode stops the write.
create or replace function public.gw_test_stable_insert(v text) returns void
    language sql stable as $$ select public.gw_test_insert(v) $$;

create or replace function public.gw_test_wait_for_lock() returns void
    language sql volatile as $$ select pg_advisory_xact_lock(5201003) $$;

create or replace function public.gw_test_private() returns integer
    language sql immutable as $$ select 7 $$;
revoke execute on function public.gw_test_private() from public, anon, authenticated;
grant execute on function public.gw_test_private() to service_role;
"""

TEARDOWN_SQL = """
drop function if exists public.gw_test_add(integer, integer);
drop function if exists public.gw_test_echo(text);
drop function if exists public.gw_test_answer();
drop function if exists public.gw_test_null();
drop function if exists public.gw_test_void();
drop function if exists public.gw_test_series(integer);
drop function if exists public.gw_test_pairs(integer);
drop function if exists public.gw_test_pair(integer);
drop function if exists public.gw_test_defaults(integer, integer, text);
drop function if exists public.gw_test_raise();
drop function if exists public.gw_test_teapot();
drop function if exists public.gw_test_pt401();
drop function if exists public.gw_test_pgrst();
drop function if exists public.gw_test_cardinality();
drop function if exists public.gw_test_insert(text);
drop function if exists public.gw_test_insert_then_raise(text);
drop function if exists public.gw_test_whoami();
drop function if exists public.gw_test_tx_mode();
drop function if exists public.gw_test_stable_insert(text);
drop function if exists public.gw_test_wait_for_lock();
drop function if exists public.gw_test_private();
drop type if exists public.gw_test_pair_t;
drop table if exists public.gw_test_scratch;
"""



@pytest.fixture(scope="module")
def stack(local_supabase):
    """The local Supabase stand-in, with this module's gw_test_* objects in its database."""
    with local_supabase.connect() as conn:
        conn.execute(SETUP_SQL)
    yield local_supabase
    with local_supabase.connect() as conn:
        conn.execute(TEARDOWN_SQL)


@pytest.fixture(scope="module")
def client(stack):
    with httpx.Client(base_url=stack.url, timeout=15) as http:
        yield http


@pytest.fixture
def rpc(stack, client):
    """POST /rest/v1/rpc/{fn} through the gateway as supabase-py sends it.

    ``apikey`` is ``key``, by default the service_role key, or the anon key
    when a user's ``token`` is given; Authorization is ``Bearer <token or key>``.
    ``headers`` replaces all of these.
    """

    def call(fn, body=None, *, key=None, token=None, headers=None, content=None):
        if key is None:
            key = stack.anon_key if token else stack.service_role_key
        sent = {"apikey": key, "Authorization": f"Bearer {token or key}", "Content-Type": "application/json"}
        if headers is not None:
            sent = headers
        if content is None:
            content = b"" if body is None else json.dumps(body).encode()
        return client.post(f"/rest/v1/rpc/{fn}", content=content, headers=sent)

    return call


@pytest.fixture
def postgrest(client):
    """POST /rpc/{fn} to bare PostgREST (no gateway), with ``Authorization: Bearer <token>`` if given."""

    def call(fn, body=None, *, token=None, headers=None):
        sent = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        return client.post(f"/rpc/{fn}", json=body or {}, headers={**sent, **(headers or {})})

    return call


def client_rpc(url: str, key: str, fn: str, params=None, **headers):
    """``create_client(url, key).rpc(fn, params).execute().data``: the real supabase-py client.

    ``headers`` are added to the client's own (``ClientOptions(headers=...)``).
    """
    with httpx.Client(timeout=15) as http:  # our own, so it is closed (and no deprecated options)
        options = ClientOptions(httpx_client=http, **({"headers": headers} if headers else {}))
        return create_client(url, key, options).rpc(fn, params or {}).execute().data


# postgrest-py 2.34 keeps a JSON error body without PostgREST's code (a
# gateway's) as it is. Older releases, down to the supabase floor CI tests,
# put a stock error in its place: the HTTP status as code, the raw body as details.
STOCK_CLIENT_ERRORS = tuple(int(part) for part in version("postgrest").split(".")[:2]) < (2, 34)


def assert_client_error_of_gateway(error: APIError, status: int, body: dict) -> None:
    """The client's APIError for a gateway's JSON ``body``: never a PostgREST code."""
    if STOCK_CLIENT_ERRORS:
        assert (error.code, error.message) == (status, "JSON could not be generated")
        assert json.loads(ast.literal_eval(error.details)) == body
    else:
        assert (error.code, error.message, error.hint) == (None, body["message"], body.get("hint"))


def assert_error(resp: httpx.Response, status: int, code: str) -> dict:
    """A PostgREST error: the status, exactly its four keys, and the Proxy-Status header."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == JSON_CONTENT_TYPE
    body = resp.json()
    assert set(body) == ERROR_KEYS, body
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    assert resp.headers["proxy-status"] == f"PostgREST; error={code}"
    return body


def scratch_count(stack, v: str) -> int:
    with stack.connect() as conn:
        return conn.execute("select count(*) from public.gw_test_scratch where v = %s", (v,)).fetchone()[0]


# -- results --------------------------------------------------------------------


def test_scalar_is_bare_json_with_200(rpc):
    resp = rpc("gw_test_add", {"a": 2, "b": 3})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == JSON_CONTENT_TYPE
    assert resp.json() == 5
    assert resp.content.strip() == b"5"


def test_text_scalar_is_a_json_string(rpc):
    text = 'naïve ✓ "quoted" \\ back'
    resp = rpc("gw_test_echo", {"t": text})
    assert resp.status_code == 200
    assert resp.headers["content-type"] == JSON_CONTENT_TYPE
    assert resp.json() == text


def test_function_without_parameters_takes_empty_object_or_empty_body(rpc):
    assert rpc("gw_test_answer", {}).json() == 42
    resp = rpc("gw_test_answer")  # no body at all
    assert resp.status_code == 200
    assert resp.json() == 42


def test_null_result_is_json_null_with_200(rpc):
    resp = rpc("gw_test_null", {})
    assert resp.status_code == 200
    assert resp.headers["content-type"] == JSON_CONTENT_TYPE
    assert resp.content.strip() == b"null"


def test_void_is_204_with_empty_body(rpc):
    resp = rpc("gw_test_void", {})
    assert resp.status_code == 204
    assert resp.content == b""


def test_setof_is_a_json_array(rpc):
    resp = rpc("gw_test_series", {"n": 3})
    assert resp.status_code == 200
    assert resp.headers["content-type"] == JSON_CONTENT_TYPE
    assert resp.json() == [1, 2, 3]


def test_empty_setof_is_an_empty_array(rpc):
    resp = rpc("gw_test_series", {"n": 0})
    assert resp.status_code == 200
    assert resp.json() == []


def test_returns_table_is_an_array_of_objects(rpc):
    resp = rpc("gw_test_pairs", {"n": 2})
    assert resp.status_code == 200
    assert resp.json() == [{"id": 1, "label": "item-1"}, {"id": 2, "label": "item-2"}]
    assert rpc("gw_test_pairs", {"n": 0}).json() == []


def test_composite_result_is_a_single_object(rpc):
    resp = rpc("gw_test_pair", {"n": 7})
    assert resp.status_code == 200
    assert resp.json() == {"id": 7, "label": "item-7"}


def test_json_result_is_passed_through(rpc):
    assert rpc("gw_test_defaults", {"a": 1, "b": 2, "c": "z"}).json() == {"a": 1, "b": 2, "c": "z"}


# -- arguments ------------------------------------------------------------------


def test_defaulted_parameters_may_be_omitted(rpc):
    assert rpc("gw_test_defaults", {"a": 1}).json() == {"a": 1, "b": 10, "c": "x"}
    assert rpc("gw_test_defaults", {"a": 1, "c": "y"}).json() == {"a": 1, "b": 10, "c": "y"}
    assert rpc("gw_test_defaults", {"a": 1, "b": 5}).json() == {"a": 1, "b": 5, "c": "x"}


def test_null_argument_is_sql_null(rpc):
    resp = rpc("gw_test_add", {"a": None, "b": 1})
    assert resp.status_code == 200
    assert resp.content.strip() == b"null"


@pytest.mark.parametrize(
    ("fn", "body", "shown"),
    [
        ("gw_test_add", {"a": 1}, "a"),  # a required parameter missing
        ("gw_test_add", {"a": 1, "b": 2, "c": 3}, "a, b, c"),  # an unknown key
        ("gw_test_add", {"b": 2, "zz": 1}, "b, zz"),
        ("gw_test_defaults", {"b": 2}, "b"),  # only defaulted ones, required a missing
        ("gw_test_defaults", {"a": 1, "d": 2}, "a, d"),
        ("gw_test_answer", {"x": 1}, "x"),  # keys for a function without parameters
        ("gw_test_does_not_exist", {"x": 1, "a": 2}, "a, x"),  # no such function at all
    ],
)
def test_keys_not_matching_the_parameters_are_404_pgrst202(rpc, fn, body, shown):
    err = assert_error(rpc(fn, body), 404, "PGRST202")
    assert err["message"].startswith(f"Could not find the function public.{fn}(")
    # PostgREST lists the body's keys sorted (they are a Set), comma-separated.
    assert err["message"] == f"Could not find the function public.{fn}({shown}) in the schema cache"


def test_pgrst202_details_name_the_parameters(rpc):
    err = assert_error(rpc("gw_test_add", {"b": 2, "zz": 1}), 404, "PGRST202")
    assert err["details"] == (
        "Searched for the function public.gw_test_add with parameters b, zz or with a single unnamed"
        " json/jsonb parameter, but no matches were found in the schema cache."
    )


def test_pgrst202_message_for_an_empty_body(rpc):
    err = assert_error(rpc("gw_test_add", {}), 404, "PGRST202")
    assert err["message"] == "Could not find the function public.gw_test_add without parameters in the schema cache"


def test_pgrst202_details_for_a_single_key(rpc):
    err = assert_error(rpc("gw_test_add", {"zz": 1}), 404, "PGRST202")
    assert err["details"].startswith("Searched for the function public.gw_test_add with parameter zz or ")


def test_wrongly_typed_argument_is_400_22p02(rpc):
    err = assert_error(rpc("gw_test_add", {"a": "abc", "b": 1}), 400, "22P02")
    assert "integer" in err["message"] and "abc" in err["message"]


def test_number_given_for_text_is_accepted_as_its_text(rpc):
    # json_to_record (PostgREST's argument typing) reads a JSON number into text.
    assert rpc("gw_test_echo", {"t": 12}).json() == "12"


def test_invalid_json_body_is_400_pgrst102(rpc):
    assert_error(rpc("gw_test_add", content=b'{"a": 1,'), 400, "PGRST102")


# -- tokens and roles (PostgREST) -----------------------------------------------


def test_role_comes_from_authorization_bearer(stack, rpc):
    headers = {"apikey": stack.anon_key, "Authorization": f"Bearer {stack.service_role_key}"}
    resp = rpc("gw_test_whoami", {}, headers=headers)
    assert resp.status_code == 200
    assert resp.json()["user"] == "service_role"


def test_postgrest_ignores_apikey(stack, postgrest):
    # Without the gateway nobody turns apikey into a token: the request runs as anon.
    resp = postgrest("gw_test_whoami", headers={"apikey": stack.service_role_key})
    assert resp.status_code == 200
    assert resp.json()["user"] == "anon"
    assert_error(postgrest("gw_test_private", headers={"apikey": stack.service_role_key}), 401, "42501")


def test_no_token_runs_as_anon(postgrest):
    assert postgrest("gw_test_whoami").json()["user"] == "anon"


def test_authorization_scheme_other_than_bearer_runs_as_anon(stack, postgrest):
    resp = postgrest("gw_test_whoami", headers={"Authorization": f"Basic {stack.service_role_key}"})
    assert resp.json()["user"] == "anon"


def test_header_names_are_case_insensitive(stack, rpc):
    resp = rpc("gw_test_whoami", {}, headers={"APIKEY": stack.service_role_key})
    assert resp.status_code == 200
    assert resp.json()["user"] == "service_role"
    resp = rpc("gw_test_whoami", {}, headers={
        "aPiKeY": stack.anon_key,
        "authorization": f"bearer {stack.authenticated_key}",
        "content-type": "application/json",
    })
    assert resp.status_code == 200
    assert resp.json()["user"] == "authenticated"
    resp = rpc("gw_test_add", {"a": 1, "b": 1}, headers={
        "APIKEY": stack.service_role_key, "cOnTeNt-PrOfIlE": "nope"})
    assert_error(resp, 406, "PGRST106")


def test_jwt_signed_with_another_secret_is_401_pgrst301(postgrest):
    token = make_key("service_role", secret="another-secret-that-is-at-least-32-characters")
    resp = postgrest("gw_test_answer", token=token)
    assert_error(resp, 401, "PGRST301")
    assert resp.headers["www-authenticate"].startswith('Bearer error="invalid_token"')


def test_malformed_jwt_is_401_pgrst301(postgrest):
    assert_error(postgrest("gw_test_answer", token="not-a-jwt"), 401, "PGRST301")


def test_expired_jwt_is_401_pgrst303(postgrest):
    token = make_key("service_role", secret=JWT_SECRET, expires_in=-3600)
    resp = postgrest("gw_test_answer", token=token)
    err = assert_error(resp, 401, "PGRST303")
    assert err["message"] == "JWT expired"
    assert resp.headers["www-authenticate"].startswith('Bearer error="invalid_token"')


def test_jwt_expired_within_the_clock_skew_is_accepted(postgrest):
    resp = postgrest("gw_test_answer", token=make_key("service_role", expires_in=-5))
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize(("claim", "message"), [("nbf", "JWT not yet valid"), ("iat", "JWT issued at future")])
def test_jwt_from_the_future_is_401_pgrst303(postgrest, claim, message):
    token = make_key("service_role", **{claim: int(time.time()) + 3600})
    err = assert_error(postgrest("gw_test_answer", token=token), 401, "PGRST303")
    assert err["message"] == message


def test_jwt_without_role_claim_is_the_anon_role(postgrest):
    token = make_key(None, sub="user-without-role")
    resp = postgrest("gw_test_whoami", token=token)
    assert resp.status_code == 200
    assert resp.json()["user"] == "anon"
    assert resp.json()["sub"] == "user-without-role"
    assert_error(postgrest("gw_test_private", token=token), 401, "42501")


def test_claims_without_role_get_the_anon_role_added(postgrest):
    claims = postgrest("gw_test_whoami", token=make_key(None)).json()["claims"]
    assert claims["role"] == "anon"


def test_role_claim_naming_no_role_is_refused(postgrest):
    # PostgREST answers 22023 "role ... does not exist": 400 up to v12, 401 from v13 (#3601).
    resp = postgrest("gw_test_answer", token=make_key("no_such_role"))
    assert resp.status_code in (400, 401)
    assert_error(resp, resp.status_code, "22023")


def test_numeric_role_claim_is_a_role_name(postgrest):
    resp = postgrest("gw_test_answer", token=make_key(123))
    assert resp.status_code in (400, 401), resp.text
    err = assert_error(resp, resp.status_code, "22023")
    assert err["message"] == 'role "123" does not exist'


def test_anon_without_execute_is_401_42501_with_www_authenticate(stack, rpc):
    resp = rpc("gw_test_private", {}, key=stack.anon_key)
    assert_error(resp, 401, "42501")
    assert resp.headers["www-authenticate"] == "Bearer"


def test_authenticated_without_execute_is_403_42501(stack, rpc):
    resp = rpc("gw_test_private", {}, token=stack.authenticated_key)
    assert_error(resp, 403, "42501")
    assert "www-authenticate" not in resp.headers


def test_service_role_may_execute_the_private_function(rpc):
    resp = rpc("gw_test_private", {})
    assert resp.status_code == 200
    assert resp.json() == 7


# -- the gateway: the project's keys ----------------------------------------------


@pytest.mark.parametrize(
    ("key_name", "role"),
    [("anon_key", "anon"), ("service_role_key", "service_role"),
     ("publishable_key", "anon"), ("secret_key", "service_role")],
)
def test_each_project_key_works_with_the_real_client(stack, key_name, role):
    key = getattr(stack, key_name)
    seen = client_rpc(stack.url, key, "gw_test_whoami")
    assert (seen["user"], seen["claims"]["role"]) == (role, role)
    assert client_rpc(stack.url, key, "gw_test_add", {"a": 2, "b": 3}) == 5
    if role == "service_role":
        assert client_rpc(stack.url, key, "gw_test_private") == 7
    else:
        with pytest.raises(APIError) as refused:
            client_rpc(stack.url, key, "gw_test_private")
        assert refused.value.code == "42501"


def test_legacy_key_reaches_postgrest_as_it_is(stack):
    claims = client_rpc(stack.url, stack.service_role_key, "gw_test_whoami")["claims"]
    assert claims == jwt.decode(stack.service_role_key, options={"verify_signature": False})


@pytest.mark.parametrize("key_name", ["publishable_key", "secret_key"])
def test_opaque_key_becomes_a_short_lived_jwt(stack, key_name):
    claims = client_rpc(stack.url, getattr(stack, key_name), "gw_test_whoami")["claims"]
    assert claims["iss"] == "supabase"
    assert 0 < claims["exp"] - claims["iat"] <= 3600


@pytest.mark.parametrize(
    ("key_name", "role"),
    [("anon_key", "anon"), ("service_role_key", "service_role"),
     ("publishable_key", "anon"), ("secret_key", "service_role")],
)
def test_apikey_alone_is_enough(stack, rpc, key_name, role):
    resp = rpc("gw_test_whoami", {}, headers={"apikey": getattr(stack, key_name)})
    assert resp.status_code == 200, resp.text
    assert resp.json()["user"] == role


def test_apikey_may_be_a_url_parameter(stack, client):
    resp = client.post(f"/rest/v1/rpc/gw_test_whoami?apikey={stack.secret_key}", json={})
    assert resp.status_code == 200, resp.text
    assert resp.json()["user"] == "service_role"


@pytest.mark.parametrize("key_name", ["anon_key", "publishable_key"])
def test_user_token_passes_through_the_gateway(stack, key_name):
    seen = client_rpc(stack.url, getattr(stack, key_name), "gw_test_whoami",
                      Authorization=f"Bearer {stack.authenticated_key}")
    assert (seen["user"], seen["sub"], seen["claims"]["aud"]) == ("authenticated", "user-1", "authenticated")


def test_user_token_with_a_secret_key_stays_the_user(stack, rpc):
    # The key only stands in for a token when the request has none of its own.
    resp = rpc("gw_test_whoami", {}, key=stack.secret_key, token=stack.authenticated_key)
    assert resp.json()["user"] == "authenticated"


def test_bad_user_token_is_refused_by_postgrest_behind_the_gateway(stack, rpc):
    resp = rpc("gw_test_answer", {}, key=stack.publishable_key, token=make_key("authenticated", expires_in=-3600))
    assert assert_error(resp, 401, "PGRST303")["message"] == "JWT expired"
    forged = make_key("service_role", secret="x" * 40)
    assert_error(rpc("gw_test_answer", {}, key=stack.anon_key, token=forged), 401, "PGRST301")


# -- the gateway: refusals -----------------------------------------------------------


def assert_gateway_refusal(resp: httpx.Response, status: int, body: dict) -> None:
    """An answer of Supabase's gateway: its own body, no PostgREST code, no Proxy-Status."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.json() == body
    assert "proxy-status" not in resp.headers


def test_no_apikey_is_401_without_touching_postgrest(stack, rpc):
    for headers in ({"Content-Type": "application/json"},
                    {"Authorization": f"Bearer {stack.service_role_key}"}):  # a token is not an API key
        resp = rpc("gw_test_insert", {"v": "no-apikey"}, headers=headers)
        assert_gateway_refusal(resp, 401, NO_API_KEY)
    assert scratch_count(stack, "no-apikey") == 0


@pytest.mark.parametrize(
    "apikey",
    [
        "sb_secret_" + "A" * 32,  # the right shape, not the project's
        "sb_publishable_" + "A" * 32,
        "not-a-key",
        make_key("service_role"),  # signed with the project's secret, but not one of its keys
        make_key("anon", secret="x" * 40),
    ],
    ids=["guessed-secret", "guessed-publishable", "garbage", "minted-service-role", "foreign-anon"],
)
def test_apikey_not_of_the_project_is_401_invalid_api_key(stack, rpc, apikey):
    resp = rpc("gw_test_insert", {"v": "bad-apikey"}, key=apikey)
    assert_gateway_refusal(resp, 401, INVALID_API_KEY)
    assert resp.headers["sb-error-code"] == "UNAUTHORIZED_INVALID_API_KEY"
    assert scratch_count(stack, "bad-apikey") == 0


def test_user_token_is_not_an_api_key(stack, rpc):
    assert_gateway_refusal(rpc("gw_test_whoami", {}, key=stack.authenticated_key), 401, INVALID_API_KEY)


def test_invalid_api_key_through_the_real_client(stack):
    with pytest.raises(APIError) as refused:
        client_rpc(stack.url, "sb_secret_" + "A" * 32, "gw_test_answer")
    assert_client_error_of_gateway(refused.value, 401, INVALID_API_KEY)


def test_secret_key_from_a_browser_is_401(stack, rpc):
    resp = rpc("gw_test_insert", {"v": "from-browser"},
               headers={"apikey": stack.secret_key, "Authorization": f"Bearer {stack.secret_key}",
                        "User-Agent": BROWSER})
    assert_gateway_refusal(resp, 401, SECRET_KEY_IN_BROWSER)
    assert resp.headers["sb-error-code"] == "UNAUTHORIZED_INVALID_API_KEY_TYPE"
    assert scratch_count(stack, "from-browser") == 0
    with pytest.raises(APIError) as refused:
        client_rpc(stack.url, stack.secret_key, "gw_test_answer", **{"User-Agent": BROWSER})
    assert_client_error_of_gateway(refused.value, 401, SECRET_KEY_IN_BROWSER)


@pytest.mark.parametrize("key_name", ["publishable_key", "anon_key", "service_role_key"])
def test_other_keys_from_a_browser_are_accepted(stack, key_name):
    # Only secret keys are kept out of browsers; the legacy service_role JWT is not checked.
    assert client_rpc(stack.url, getattr(stack, key_name), "gw_test_answer", **{"User-Agent": BROWSER}) == 42


def test_secret_key_with_a_client_library_user_agent_is_accepted(stack):
    agent = "MyDaemon/1.0 (Macintosh; Intel Mac OS X 10_15_7) python-httpx/0.28.1"
    assert client_rpc(stack.url, stack.secret_key, "gw_test_answer", **{"User-Agent": agent}) == 42


# -- errors raised by functions ---------------------------------------------------


def test_raise_exception_is_400_p0001_with_detail_and_hint(rpc):
    err = assert_error(rpc("gw_test_raise", {}), 400, "P0001")
    assert err == {"code": "P0001", "message": "boom", "details": "some detail", "hint": "some hint"}


def test_pt_sqlstate_sets_the_http_status(rpc):
    err = assert_error(rpc("gw_test_teapot", {}), 418, "PT418")
    assert err["message"] == "short and stout"


def test_unique_violation_is_409_23505(stack, rpc):
    assert rpc("gw_test_insert", {"v": "dup-marker"}).status_code == 204
    assert_error(rpc("gw_test_insert", {"v": "dup-marker"}), 409, "23505")
    assert scratch_count(stack, "dup-marker") == 1


def test_pt401_carries_www_authenticate(rpc):
    resp = rpc("gw_test_pt401", {})
    assert_error(resp, 401, "PT401")
    assert resp.headers["www-authenticate"] == "Bearer"


def test_raise_pgrst_controls_the_response(rpc):
    resp = rpc("gw_test_pgrst", {})
    assert resp.status_code == 402
    assert resp.json() == {"code": "123", "message": "Payment Required", "details": "Quota exceeded",
                           "hint": "Upgrade"}
    assert resp.headers["x-powered-by"] == "Nerd Rage"


def test_cardinality_violation_is_500(rpc):
    assert_error(rpc("gw_test_cardinality", {}), 500, "21000")


# -- transactions and request settings ------------------------------------------


def test_successful_call_commits(stack, rpc):
    resp = rpc("gw_test_insert", {"v": "commit-marker"})
    assert resp.status_code == 204
    assert scratch_count(stack, "commit-marker") == 1


def test_error_rolls_back_the_whole_request(stack, rpc):
    err = assert_error(rpc("gw_test_insert_then_raise", {"v": "rollback-marker"}), 400, "P0001")
    assert err["message"] == "after insert of rollback-marker"
    assert scratch_count(stack, "rollback-marker") == 0


def test_jwt_claims_and_role_are_visible_inside_the_function(stack, rpc):
    resp = rpc("gw_test_whoami", {}, token=stack.authenticated_key)
    assert resp.status_code == 200
    seen = resp.json()
    assert seen["user"] == "authenticated"
    assert seen["sub"] == "user-1"
    assert seen["claims"]["role"] == "authenticated"
    assert seen["claims"]["aud"] == "authenticated"
    assert seen["search_path"] == '"public"'


def test_custom_claims_reach_the_function(rpc):
    token = make_key("service_role", sub="custom-sub", app_metadata={"tier": "gold"})
    claims = rpc("gw_test_whoami", {}, token=token).json()["claims"]
    assert claims["sub"] == "custom-sub"
    assert claims["app_metadata"] == {"tier": "gold"}


def test_role_settings_apply_and_nothing_leaks_between_requests(stack, rpc):
    # Supabase's anon and authenticated roles carry their own statement_timeout;
    # service_role has none and keeps the authenticator's (8s).
    for _ in range(3):  # alternate over the pool's connections
        anon = rpc("gw_test_whoami", {}, key=stack.anon_key).json()
        assert (anon["user"], anon["statement_timeout"]) == ("anon", "3s")
        user = rpc("gw_test_whoami", {}, token=stack.authenticated_key).json()
        assert (user["user"], user["statement_timeout"], user["sub"]) == ("authenticated", "8s", "user-1")
        service = rpc("gw_test_whoami", {}).json()
        assert (service["user"], service["statement_timeout"], service["sub"]) == ("service_role", "8s", None)


def test_request_after_an_error_is_clean(stack, rpc):
    assert rpc("gw_test_raise", {}, token=stack.authenticated_key).status_code == 400
    seen = rpc("gw_test_whoami", {}, token=make_key(None)).json()
    assert seen["user"] == "anon"
    assert seen["sub"] is None


def test_stable_and_immutable_functions_run_read_only(rpc):
    seen = rpc("gw_test_whoami", {}).json()  # STABLE
    assert (seen["read_only"], seen["isolation"]) == ("on", "read committed")
    assert rpc("gw_test_tx_mode", {}).json() == {"read_only": "off", "isolation": "read committed"}  # VOLATILE


def test_write_in_a_stable_function_is_405_25006(stack, rpc):
    err = assert_error(rpc("gw_test_stable_insert", {"v": "stable-write"}), 405, "25006")
    assert err["message"] == "cannot execute INSERT in a read-only transaction"
    assert scratch_count(stack, "stable-write") == 0
    assert rpc("gw_test_insert", {"v": "stable-write"}).status_code == 204  # the same write, VOLATILE
    assert scratch_count(stack, "stable-write") == 1


def test_read_only_mode_does_not_outlive_its_request(rpc):
    for _ in range(3):  # alternate over the pool's connections
        assert rpc("gw_test_whoami", {}).json()["read_only"] == "on"
        assert rpc("gw_test_tx_mode", {}).json()["read_only"] == "off"


# -- the connection pool -------------------------------------------------------------


def test_no_free_connection_in_time_is_504_pgrst003(stack):
    with one_connection_api(stack, pool_timeout=0.3) as gateway, \
            stack.connect() as locker:
        locker.execute("select pg_advisory_lock(%s)", (LOCK_KEY,))
        blocked: dict = {}
        holder = threading.Thread(target=lambda: blocked.update(
            data=client_rpc(gateway.url, stack.secret_key, "gw_test_wait_for_lock")))
        holder.start()
        try:
            # The pool's only connection now waits on the lock the test holds.
            wait_until(lambda: locker.execute(
                "select count(*) from pg_locks where locktype = 'advisory' and objid = %s and not granted",
                (LOCK_KEY,)).fetchone()[0] == 1, "the first request to wait on the lock", timeout=30)
            with pytest.raises(APIError) as timed_out:
                client_rpc(gateway.url, stack.secret_key, "gw_test_answer")
            resp = httpx.post(f"{gateway.url}/rest/v1/rpc/gw_test_answer", json={},
                              headers={"apikey": stack.secret_key}, timeout=15)
        finally:
            locker.execute("select pg_advisory_unlock(%s)", (LOCK_KEY,))
            holder.join(30)
    assert timed_out.value.code == "PGRST003"
    err = assert_error(resp, 504, "PGRST003")
    assert err == {"code": "PGRST003", "message": "Timed out acquiring connection from connection pool.",
                   "details": None, "hint": None}
    assert blocked == {"data": []}, "the request holding the connection finished normally"


def test_no_connection_to_be_had_is_503_pgrst000(stack):
    # The database refuses new connections, as a stopped server would. The
    # function is in the schema cache: PostgREST answers PGRST202 for any
    # other without asking the database.
    name = "gw_test_refusing"
    with stack.connect() as admin:
        admin.execute(f"drop database if exists {name}")
        admin.execute(f"create database {name}")
    with stack.server.connect(name) as conn:
        conn.execute("create function public.gw_test_answer() returns integer language sql as $$ select 42 $$")
    gateway = RpcGateway(make_conninfo(stack.gateway.dsn, dbname=name), JWT_SECRET, keys=stack.keys,
                         pool_timeout=0.5).start()
    try:
        with stack.connect() as admin:
            admin.execute(f"alter database {name} allow_connections false")
            admin.execute("select pg_terminate_backend(pid) from pg_stat_activity where datname = %s", (name,))
        with pytest.raises(APIError) as unavailable:
            client_rpc(gateway.url, stack.secret_key, "gw_test_answer")
        resp = httpx.post(f"{gateway.url}/rpc/gw_test_answer", json={}, timeout=15)
    finally:
        gateway.stop()
        with stack.connect() as admin:
            admin.execute(f"drop database if exists {name} with (force)")
    assert unavailable.value.code == "PGRST000"
    assert assert_error(resp, 503, "PGRST000")["message"] == "Database connection error."


# -- schemas (profiles) ---------------------------------------------------------


def test_content_profile_other_than_public_is_406_pgrst106(rpc, stack):
    headers = {"apikey": stack.service_role_key, "Content-Profile": "private"}
    assert_error(rpc("gw_test_answer", {}, headers=headers), 406, "PGRST106")


def test_content_profile_public_is_accepted(rpc, stack):
    headers = {"apikey": stack.service_role_key, "Content-Profile": "public", "Accept-Profile": "public"}
    resp = rpc("gw_test_answer", {}, headers=headers)
    assert resp.status_code == 200
    assert resp.json() == 42


def test_accept_profile_is_ignored_on_post(rpc, stack):
    headers = {"apikey": stack.service_role_key, "Accept-Profile": "private"}
    resp = rpc("gw_test_answer", {}, headers=headers)
    assert resp.status_code == 200, resp.text


# -- every error has PostgREST's shape -----------------------------------------


@pytest.mark.parametrize(
    ("fn", "body", "key", "extra", "status", "code"),
    [
        ("gw_test_add", {"a": 1}, None, {}, 404, "PGRST202"),
        ("gw_test_add", {"a": "x", "b": 1}, None, {}, 400, "22P02"),
        ("gw_test_raise", {}, None, {}, 400, "P0001"),
        ("gw_test_teapot", {}, None, {}, 418, "PT418"),
        ("gw_test_private", {}, "anon", {}, 401, "42501"),
        ("gw_test_private", {}, "authenticated", {}, 403, "42501"),
        ("gw_test_answer", {}, "wrong-secret", {}, 401, "PGRST301"),
        ("gw_test_answer", {}, "expired", {}, 401, "PGRST303"),
        ("gw_test_answer", {}, None, {"Content-Profile": "other"}, 406, "PGRST106"),
    ],
)
def test_every_error_has_exactly_four_keys_and_proxy_status(stack, rpc, fn, body, key, extra, status, code):
    apikey, token = {
        None: (stack.service_role_key, stack.service_role_key),
        "anon": (stack.publishable_key, stack.publishable_key),
        "authenticated": (stack.anon_key, stack.authenticated_key),
        "wrong-secret": (stack.anon_key, make_key("service_role", secret="x" * 40)),
        "expired": (stack.anon_key, make_key("service_role", expires_in=-3600)),
    }[key]
    headers = {"apikey": apikey, "Authorization": f"Bearer {token}", "Content-Type": "application/json", **extra}
    assert_error(rpc(fn, body, headers=headers), status, code)


# -- injected faults ---------------------------------------------------------------


@pytest.fixture
def fault(stack):
    """Set ``stack.gateway.fault``; cleared after the test whatever happens."""

    def inject(name):
        stack.gateway.fault = name

    yield inject
    stack.gateway.fault = None


@pytest.mark.parametrize(("name", "status", "body"), [("502", 502, BAD_GATEWAY), ("504", 504, GATEWAY_TIMEOUT)])
def test_gateway_faults_answer_json_without_a_code(stack, rpc, fault, name, status, body):
    fault(name)
    resp = rpc("gw_test_insert", {"v": f"fault-{name}"})
    assert_gateway_refusal(resp, status, body)
    with pytest.raises(APIError) as failed:
        client_rpc(stack.url, stack.secret_key, "gw_test_answer")
    assert_client_error_of_gateway(failed.value, status, body)
    assert scratch_count(stack, f"fault-{name}") == 0


def test_cdn_fault_520_is_an_html_page(stack, rpc, fault):
    fault("520")
    resp = rpc("gw_test_answer", {})
    assert resp.status_code == 520
    assert resp.headers["content-type"].startswith("text/html")
    assert "520" in resp.text and "proxy-status" not in resp.headers
    with pytest.raises(APIError) as failed:
        client_rpc(stack.url, stack.secret_key, "gw_test_answer")
    # What postgrest-py makes of a non-JSON error page:
    assert failed.value.code == (520 if STOCK_CLIENT_ERRORS else "520")


def test_fault_503_is_postgrest_answering_pgrst001(rpc, postgrest, fault):
    fault("503")
    for resp in (rpc("gw_test_answer", {}), postgrest("gw_test_answer")):
        assert assert_error(resp, 503, "PGRST001")["details"] == "injected fault"


def test_gateway_checks_the_key_before_a_502_or_504(stack, rpc, fault):
    fault("502")
    assert_gateway_refusal(rpc("gw_test_answer", {}, key="not-a-key"), 401, INVALID_API_KEY)


def test_close_drops_the_connection_without_an_answer(stack, rpc, fault):
    fault("close")
    with pytest.raises(httpx.RemoteProtocolError):
        rpc("gw_test_answer", {})


def test_hang_answers_nothing_until_cleared(stack, fault):
    fault("hang")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{stack.url}/rest/v1/rpc/gw_test_answer", json={},
                   headers={"apikey": stack.secret_key}, timeout=httpx.Timeout(15, read=0.5))
    fault(None)
    assert client_rpc(stack.url, stack.secret_key, "gw_test_answer") == 42


@pytest.mark.parametrize("name", ["hang", "close", "502", "504", "520"])
def test_gateway_faults_spare_bare_postgrest(postgrest, fault, name):
    fault(name)
    resp = postgrest("gw_test_answer")
    assert (resp.status_code, resp.json()) == (200, 42)


# -- request counting -------------------------------------------------------------


def test_request_counter_counts_each_request_once(stack, rpc, client):
    gateway = stack.gateway
    gateway.reset_counts()
    assert gateway.request_count == 0
    requests = [
        lambda: rpc("gw_test_add", {"a": 1, "b": 2}),  # 200
        lambda: rpc("gw_test_void", {}),  # 204
        lambda: rpc("gw_test_add", {"a": 1}),  # 404
        lambda: rpc("gw_test_raise", {}),  # 400
        lambda: rpc("gw_test_add", {"a": 1, "b": 2}, headers={}),  # 401 from the gateway, no apikey
        lambda: rpc("gw_test_add", {"a": 1, "b": 2}, key=make_key("x", expires_in=-60)),  # 401, invalid apikey
        lambda: rpc("gw_test_add", {"a": 1, "b": 2}, headers={"apikey": stack.service_role_key,
                                                            "Content-Profile": "nope"}),  # 406
        lambda: rpc("gw_test_add", {"a": 1, "b": 2}),
    ]
    for done, send in enumerate(requests, start=1):
        send()
        assert gateway.request_count == done
    assert gateway.counts["gw_test_add"] == 6
    assert gateway.counts["gw_test_void"] == 1
    assert gateway.counts["gw_test_raise"] == 1
    client.post("/rest/v1/gw_test_scratch", json={"v": "x"}, headers={"apikey": stack.service_role_key})
    assert gateway.request_count == len(requests) + 1
    gateway.reset_counts()
    assert gateway.request_count == 0


# -- PostgREST's SQLSTATE -> HTTP status mapping -----------------------------------


@pytest.mark.parametrize(
    ("sqlstate", "authenticated", "status"),
    [
        ("P0001", True, 400),
        ("42883", True, 404),
        ("42P01", True, 404),
        ("23505", True, 409),
        ("23503", True, 409),
        ("25006", True, 405),
        ("08006", True, 503),
        ("53300", True, 503),
        ("57P01", True, 503),
        ("57014", True, 500),
        ("40001", True, 500),
        ("XX000", True, 500),
        ("28000", True, 403),
        ("22P02", True, 400),
        ("42501", False, 401),
        ("42501", True, 403),
        # more of PostgREST's table
        ("53400", True, 500),
        ("42P17", True, 500),
        ("P0002", True, 500),
        ("0L000", True, 403),
        ("0P000", True, 403),
        ("25001", True, 500),
        ("2D000", True, 500),
        ("38000", True, 500),
        ("39000", True, 500),
        ("3B000", True, 500),
        ("54000", True, 500),
        ("55P03", True, 500),
        ("58030", True, 500),
        ("F0000", True, 500),
        ("HV000", True, 500),
        ("09000", True, 500),
        ("23502", True, 400),
        ("42703", True, 400),
        ("PT418", True, 418),
        ("PT402", False, 402),
        ("PTabc", True, 500),
    ],
)
def test_http_status_follows_postgrest(sqlstate, authenticated, status):
    assert http_status(sqlstate, authenticated) == status


def test_http_status_of_cardinality_violation():
    assert http_status("21000", True) == 500
