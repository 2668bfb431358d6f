-- The roles and default privileges a Supabase project has before any
-- project SQL runs, so that sql/ is tested against the same starting point:
-- anon/authenticated/service_role cannot log in, service_role bypasses RLS,
-- and PostgREST logs in as authenticator and switches to them per request.
-- Roles belong to the cluster, default privileges to each database: the
-- first part runs once, the second in every database it is applied to.
do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'anon') then
        create role anon nologin noinherit;
        create role authenticated nologin noinherit;
        create role service_role nologin noinherit bypassrls;
        create role authenticator login noinherit password 'authenticator-test-password';
        grant anon, authenticated, service_role to authenticator;
        alter role anon set statement_timeout = '3s';
        alter role authenticated set statement_timeout = '8s';
    end if;
end;
$$;

grant usage on schema public to anon, authenticated, service_role;
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;
