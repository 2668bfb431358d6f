-- A database set up the way Supabase sets up a project's database, so that
-- sql/ is tested from the same starting point as on a real project.
--
-- Written after Supabase's published image scripts (github.com/supabase/postgres:
-- migrations/db/migrate.sh, init-scripts/00000000000000-initial-schema.sql and
-- 00000000000003-post-setup.sql, migrations/10000000000000_demote-postgres.sql,
-- 20221028101028_set_authenticator_timeout.sql, 20221103090837_revoke_admin.sql,
-- 20230201083204_grant_auth_roles_to_postgres.sql, 20230306081037_grant_pg_monitor_to_postgres.sql,
-- 20230529180330_alter_api_roles_for_inherit.sql, 20240606060239_grant_predefined_roles_to_postgres.sql,
-- 20231130133139_set_lock_timeout_to_authenticator_role.sql,
-- 20220321174452_fix-postgrest-alter-type-event-trigger.sql, and
-- ansible/files/postgresql_extension_custom_scripts/pg_cron/after-create.sql
-- and ansible/files/postgresql_config/supautils.conf.j2).
-- Only what touches this project is recreated: roles, their settings and
-- memberships, schema grants, default privileges, the `extensions` schema,
-- PostgREST's schema-reload event triggers, pg_cron's grants, and of
-- supautils only what lets `postgres` create pg_cron (emulated, see below).
-- Auth, storage, realtime and pgsodium are not.
--
-- Runs as the cluster's superuser `supabase_admin` on database `postgres`.
-- The two passwords are filled in by tests/support/database.py.

-- migrate.sh: `postgres` starts as a superuser owning the database; the init
-- scripts run as it, then the migrations demote it.
create role postgres superuser login password {postgres_password};
alter database postgres owner to postgres;

set role postgres;

create schema if not exists extensions;
create extension if not exists pgcrypto with schema extensions;

create role anon          nologin noinherit;
create role authenticated nologin noinherit;
create role service_role  nologin noinherit bypassrls;
create role authenticator login noinherit password {authenticator_password};
grant anon, authenticated, service_role to authenticator;

grant usage on schema public to postgres, anon, authenticated, service_role;
alter default privileges in schema public grant all on tables    to postgres, anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to postgres, anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to postgres, anon, authenticated, service_role;
grant usage on schema extensions to postgres, anon, authenticated, service_role;

alter default privileges for user supabase_admin in schema public grant all on sequences to postgres, anon, authenticated, service_role;
alter default privileges for user supabase_admin in schema public grant all on tables    to postgres, anon, authenticated, service_role;
alter default privileges for user supabase_admin in schema public grant all on functions to postgres, anon, authenticated, service_role;

alter role anon          set statement_timeout = '3s';
alter role authenticated set statement_timeout = '8s';
alter role postgres      set search_path to "$user", public, extensions;

reset role;

-- The migrations, run as supabase_admin.
grant all on schema extensions to postgres;
grant all on all tables in schema extensions to postgres;
grant all on all routines in schema extensions to postgres;
alter role postgres nosuperuser createdb createrole login replication bypassrls;
alter role authenticator set statement_timeout = '8s';
alter role authenticator set lock_timeout = '8s';
grant anon, authenticated, service_role to postgres;
grant pg_read_all_data, pg_signal_backend, pg_monitor to postgres;
alter role anon inherit;
alter role authenticated inherit;
alter role service_role inherit;

-- PostgREST serves functions from its schema cache; Supabase reloads it after
-- every DDL that could change what the API exposes, temporary objects aside.
create function extensions.pgrst_ddl_watch() returns event_trigger language plpgsql as $$
begin
    if exists (
        select from pg_event_trigger_ddl_commands() c
         where c.schema_name is distinct from 'pg_temp'
           and c.command_tag = any (array[
               'CREATE SCHEMA', 'ALTER SCHEMA', 'CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'ALTER TABLE',
               'CREATE FOREIGN TABLE', 'ALTER FOREIGN TABLE', 'CREATE VIEW', 'ALTER VIEW',
               'CREATE MATERIALIZED VIEW', 'ALTER MATERIALIZED VIEW', 'CREATE FUNCTION', 'ALTER FUNCTION',
               'CREATE TRIGGER', 'CREATE TYPE', 'ALTER TYPE', 'CREATE RULE', 'COMMENT'])
    ) then
        notify pgrst, 'reload schema';
    end if;
end $$;

create function extensions.pgrst_drop_watch() returns event_trigger language plpgsql as $$
begin
    if exists (
        select from pg_event_trigger_dropped_objects() o
         where not o.is_temporary
           and o.object_type = any (array[
               'schema', 'table', 'foreign table', 'view', 'materialized view', 'function', 'trigger', 'type',
               'rule'])
    ) then
        notify pgrst, 'reload schema';
    end if;
end $$;

create event trigger pgrst_ddl_watch on ddl_command_end execute function extensions.pgrst_ddl_watch();
create event trigger pgrst_drop_watch on sql_drop execute function extensions.pgrst_drop_watch();

-- supautils' after-create script for pg_cron: hands it to `postgres` (USAGE
-- on the schema, every function, SELECT only on cron.job) and to no API role.
create function extensions.pg_cron_after_create() returns void language plpgsql as $$
begin
    grant usage on schema cron to postgres with grant option;
    grant all on all functions in schema cron to postgres with grant option;
    alter default privileges for user supabase_admin in schema cron grant all on sequences to postgres with grant option;
    alter default privileges for user supabase_admin in schema cron grant all on tables    to postgres with grant option;
    alter default privileges for user supabase_admin in schema cron grant all on functions to postgres with grant option;
    grant all privileges on all tables in schema cron to postgres with grant option;
    revoke all on table cron.job from postgres;
    grant select on table cron.job to postgres with grant option;
end $$;
revoke all on function extensions.pg_cron_after_create() from public;

-- supautils (not packaged for this server) lets `postgres` create the
-- extensions on its privileged list as if it were supabase_admin, then runs
-- the after-create script. Emulated for pg_cron only, by two event triggers:
-- before a CREATE EXTENSION run as `postgres` whose text names pg_cron while
-- it is not enabled, `postgres` is made superuser (undone with the
-- transaction if the command fails); after the command `postgres` is demoted,
-- and pg_cron is dropped and created again by supabase_admin in pg_catalog
-- (supautils' schema override), so that it belongs to the superuser as on
-- Supabase, and the after-create script runs. Another extension created
-- while `postgres` was raised is refused as Postgres refuses it, unless
-- trusted. The rest of supautils (reserved roles, settings, event triggers
-- and publications for `postgres`, its other privileged extensions) is not
-- emulated.
create function extensions.supautils_before_create_extension() returns event_trigger
    language plpgsql security definer set search_path = '' as $$
begin
    if coalesce(nullif(current_setting('role'), 'none'), session_user) = 'postgres'
       and current_setting('supautils_emulation.recreating', true) is distinct from 'on'
       and not (select rolsuper from pg_catalog.pg_roles where rolname = 'postgres')
       and not exists (select from pg_catalog.pg_extension where extname = 'pg_cron')
       and current_query() ~* 'create\s+extension\s+(if\s+not\s+exists\s+)?"?pg_cron\M'
    then
        alter role postgres superuser;
    end if;
end $$;

create function extensions.supautils_after_create_extension() returns event_trigger
    language plpgsql security definer set search_path = '' as $$
declare
    created record;
begin
    if not (select rolsuper from pg_catalog.pg_roles where rolname = 'postgres') then
        return;  -- `postgres` was not raised for this command
    end if;
    alter role postgres nosuperuser;
    for created in
        select e.extname, coalesce(v.trusted, false) as trusted
          from pg_catalog.pg_event_trigger_ddl_commands() c
          join pg_catalog.pg_extension e on e.oid = c.objid
          left join pg_catalog.pg_available_extension_versions v
                 on v.name = e.extname and v.version = e.extversion
         where c.object_type = 'extension'
    loop
        if created.extname = 'pg_cron' then
            perform pg_catalog.set_config('supautils_emulation.recreating', 'on', true);
            drop extension pg_cron;
            create extension pg_cron with schema pg_catalog;
            perform extensions.pg_cron_after_create();
            perform pg_catalog.set_config('supautils_emulation.recreating', 'off', true);
        elsif not created.trusted then
            raise exception 'permission denied to create extension "%"', created.extname
                using errcode = 'insufficient_privilege', hint = 'Must be superuser to create this extension.';
        end if;
    end loop;
end $$;

create event trigger supautils_before_create_extension on ddl_command_start
    when tag in ('CREATE EXTENSION') execute function extensions.supautils_before_create_extension();
create event trigger supautils_after_create_extension on ddl_command_end
    when tag in ('CREATE EXTENSION') execute function extensions.supautils_after_create_extension();

-- pg_cron enabled from the dashboard; LocalSupabase(pg_cron_enabled=False)
-- drops it again for a project that has not enabled it.
create extension pg_cron with schema pg_catalog;
select extensions.pg_cron_after_create();
