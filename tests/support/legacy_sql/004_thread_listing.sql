-- Listing, expiry extension, per-user erase and statistics (schema version 2).
-- Same rules as 002: SECURITY INVOKER, search_path pinned, one call per operation.

-- Live threads, most recently accessed first, as one JSON array (one value,
-- so every transport reads it the same way). size_bytes is the length of the
-- stored JSON text.
create or replace function public.thread_list(p_user_id text default null, p_limit integer default 50)
returns jsonb
language sql
stable
security invoker
set search_path = ''
as $$
    select coalesce(jsonb_agg(item order by accessed_at desc, thread_id), '[]'::jsonb)
    from (
        select t.thread_id, t.accessed_at,
               jsonb_build_object(
                   'key', t.thread_id,
                   'user_id', t.user_id,
                   'created_at', t.created_at,
                   'accessed_at', t.accessed_at,
                   'expires_at', t.expires_at,
                   'size_bytes', pg_catalog.octet_length(t.conversation_data::text),
                   'metadata', t.metadata
               ) as item
          from public.conversation_threads t
         where t.expires_at > now()
           and (p_user_id is null or t.user_id = p_user_id)
         order by t.accessed_at desc, t.thread_id
         limit greatest(coalesce(p_limit, 50), 0)
    ) live;
$$;

-- Give a live thread a new lifetime without rewriting its document.
create or replace function public.thread_touch(p_thread_id text, p_ttl_seconds integer)
returns boolean
language plpgsql
volatile
security invoker
set search_path = ''
as $$
begin
    if p_ttl_seconds is null or p_ttl_seconds <= 0 then
        raise exception 'ttl_seconds must be a positive integer, got %', p_ttl_seconds
            using errcode = '22023';
    end if;
    update public.conversation_threads t
       set expires_at = now() + make_interval(secs => p_ttl_seconds),
           accessed_at = now()
     where t.thread_id = p_thread_id
       and t.expires_at > now();
    return found;
end;
$$;

-- Erase every thread of a user, expired ones included (right to be forgotten).
create or replace function public.delete_user_threads(p_user_id text)
returns integer
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
    v_deleted integer;
begin
    if p_user_id is null or p_user_id = '' then
        raise exception 'user_id must be a non-empty text' using errcode = '22023';
    end if;
    delete from public.conversation_threads t where t.user_id = p_user_id;
    get diagnostics v_deleted = row_count;
    return v_deleted;
end;
$$;

-- Counts and sizes for monitoring. Sizes read the stored documents: this is
-- a full scan, meant for an operator's occasional look, not a hot path.
create or replace function public.thread_stats()
returns jsonb
language sql
stable
security invoker
set search_path = ''
as $$
    select jsonb_build_object(
        'live', count(*) filter (where t.expires_at > now()),
        'expired', count(*) filter (where t.expires_at <= now()),
        'live_bytes', coalesce(sum(pg_catalog.octet_length(t.conversation_data::text))
                                   filter (where t.expires_at > now()), 0),
        'total_bytes', coalesce(sum(pg_catalog.octet_length(t.conversation_data::text)), 0)
    )
    from public.conversation_threads t;
$$;

-- The installed schema version, on its own so that later files replace this
-- one-line function instead of all of storage_health.
create or replace function public.conversation_storage_schema_version()
returns integer
language sql
immutable
security invoker
set search_path = ''
as $$ select 2 $$;

-- The health report, now with the version from the function above; it also says whether the hourly cleanup job
-- is scheduled with pg_cron (null where pg_cron is not installed).
create or replace function public.storage_health()
returns jsonb
language plpgsql
stable
security invoker
set search_path = ''
as $$
declare
    v_report jsonb;
    v_job    boolean;
begin
    select jsonb_build_object(
        'schema_version', public.conversation_storage_schema_version(),
        'role', current_user,
        'server_time', now(),
        'rls_enabled', c.relrowsecurity,
        'can_access_rows', (
            r.rolsuper or r.rolbypassrls
            or pg_catalog.pg_has_role(current_user, c.relowner, 'USAGE')
        )
    )
      into v_report
      from pg_catalog.pg_class c
      join pg_catalog.pg_namespace n on n.oid = c.relnamespace
     cross join pg_catalog.pg_roles r
     where n.nspname = 'public'
       and c.relname = 'conversation_threads'
       and r.rolname = current_user;

    if v_report is not null and pg_catalog.to_regclass('cron.job') is not null then
        begin
            execute 'select exists (select 1 from cron.job where jobname = $1)'
               into v_job using 'cleanup-expired-threads';
        exception when insufficient_privilege then
            v_job := null;  -- the caller may not read cron.job: unknown, not absent
        end;
        v_report := v_report || jsonb_build_object('cleanup_job_scheduled', v_job);
    else
        v_report := v_report || jsonb_build_object('cleanup_job_scheduled', null);
    end if;
    return v_report;
end;
$$;

-- Privileges, as in 003: service_role only.
select public.conversation_storage_restrict(f)
  from unnest(array[
      'public.thread_list(text, integer)',
      'public.thread_touch(text, integer)',
      'public.delete_user_threads(text)',
      'public.thread_stats()',
      'public.conversation_storage_schema_version()'
  ]::regprocedure[]) as f;
