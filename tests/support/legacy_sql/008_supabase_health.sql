-- storage_health() that works for service_role on Supabase (schema version 5).
--
-- On Supabase, pg_cron's schema `cron` is usable by `postgres` only: its
-- after-create script grants USAGE on the schema and SELECT on cron.job to
-- postgres and to no API role. The version in 004 looked cron.job up as the
-- caller, and for service_role even that lookup fails (42501 "permission
-- denied for schema cron"), so the health check, and with it the library's
-- startup, failed on every project that had enabled pg_cron.
--
-- Nothing service_role runs may touch cron.* directly. Whether the cleanup
-- job is scheduled is answered by the one function below, which runs with
-- its owner's rights (the role applying this file: `postgres` in Supabase's
-- SQL editor and for `conversation-storage migrate`, which may read
-- cron.job). It is the only SECURITY DEFINER function of the schema and is
-- safe as one: no arguments, a fixed job name, one boolean out,
-- search_path pinned, EXECUTE for service_role only.

create or replace function public.conversation_storage_cleanup_job_scheduled()
returns boolean
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
    v_scheduled boolean;
begin
    if not exists (select 1 from pg_catalog.pg_extension where extname = 'pg_cron') then
        return null;
    end if;
    -- Dynamic, so the function can be created where pg_cron is not installed.
    execute 'select exists (select 1 from cron.job where jobname = $1)'
       into v_scheduled using 'cleanup-expired-threads';
    return v_scheduled;
exception
    when insufficient_privilege or undefined_table or invalid_schema_name then
        return null;  -- the owner cannot read cron.job either: unknown, not absent
end;
$$;

create or replace function public.conversation_storage_schema_version()
returns integer
language sql
immutable
security invoker
set search_path = ''
as $$ select 5 $$;

-- The health report: schema version, the caller's role, whether it can see
-- the rows, RLS, and pg_cron's state. It reads only pg_catalog and the
-- function above, so every role allowed to execute it gets an answer.
create or replace function public.storage_health()
returns jsonb
language sql
stable
security invoker
set search_path = ''
as $$
    select jsonb_build_object(
        'schema_version', public.conversation_storage_schema_version(),
        'role', current_user,
        'server_time', now(),
        'rls_enabled', c.relrowsecurity,
        'can_access_rows', (
            r.rolsuper or r.rolbypassrls
            or pg_catalog.pg_has_role(current_user, c.relowner, 'USAGE')
        ),
        'pg_cron_installed', exists (select 1 from pg_catalog.pg_extension e where e.extname = 'pg_cron'),
        'cleanup_job_scheduled', public.conversation_storage_cleanup_job_scheduled()
    )
      from pg_catalog.pg_class c
      join pg_catalog.pg_namespace n on n.oid = c.relnamespace
     cross join pg_catalog.pg_roles r
     where n.nspname = 'public'
       and c.relname = 'conversation_threads'
       and r.rolname = current_user;
$$;

select public.conversation_storage_restrict(f)
  from unnest(array[
      'public.conversation_storage_cleanup_job_scheduled()',
      'public.conversation_storage_schema_version()',
      'public.storage_health()'
  ]::regprocedure[]) as f;
