-- One function per storage operation: each client call is a single round
-- trip, atomic, and judged on the server's clock (now()), never the client's.
-- Every function: SECURITY INVOKER, search_path pinned to '' and fully
-- qualified names, so a caller cannot redirect lookups to objects of its own.

-- Store (insert or replace) a thread. p_data is JSON text; it is cast here so
-- clients can send the caller's text as-is instead of re-encoding a parsed
-- document. Replacing a live thread keeps its created_at, and keeps its
-- user_id / metadata unless new ones are given (pal's add_turn rewrites a
-- thread without them); replacing an expired one starts a new thread.
create or replace function public.thread_set(
    p_thread_id   text,
    p_data        text,
    p_ttl_seconds integer,
    p_user_id     text  default null,
    p_metadata    jsonb default null
)
returns timestamptz
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
    v_expires_at timestamptz;
begin
    if p_ttl_seconds is null or p_ttl_seconds <= 0 then
        raise exception 'ttl_seconds must be a positive integer, got %', p_ttl_seconds
            using errcode = '22023';
    end if;
    if p_metadata is not null and jsonb_typeof(p_metadata) <> 'object' then
        raise exception 'metadata must be a JSON object'
            using errcode = '22023';
    end if;

    insert into public.conversation_threads as t
        (thread_id, user_id, conversation_data, expires_at, metadata)
    values
        (p_thread_id, p_user_id, p_data::jsonb,
         now() + make_interval(secs => p_ttl_seconds),
         coalesce(p_metadata, '{}'::jsonb))
    on conflict (thread_id) do update set
        conversation_data = excluded.conversation_data,
        expires_at        = excluded.expires_at,
        accessed_at       = now(),
        created_at  = case when t.expires_at > now() then t.created_at else now() end,
        user_id     = case when t.expires_at > now()
                           then coalesce(p_user_id, t.user_id) else p_user_id end,
        metadata    = case when t.expires_at > now()
                           then coalesce(p_metadata, t.metadata) else excluded.metadata end
    returning t.expires_at into v_expires_at;

    return v_expires_at;
end;
$$;

-- Read a live thread as JSON text (text, not jsonb: a stored JSON null must
-- stay distinguishable from "no such thread", which is SQL NULL).
-- Expired rows are filtered, not deleted: reads stay cheap and cleanup is
-- left to cleanup_expired_threads(). accessed_at is refreshed at most once a
-- minute per thread so hot reads do not each cost a row write.
create or replace function public.thread_get(p_thread_id text)
returns text
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
    v_data        jsonb;
    v_accessed_at timestamptz;
begin
    select t.conversation_data, t.accessed_at
      into v_data, v_accessed_at
      from public.conversation_threads t
     where t.thread_id = p_thread_id
       and t.expires_at > now();

    if not found then
        return null;
    end if;

    if v_accessed_at < now() - interval '1 minute' then
        update public.conversation_threads t
           set accessed_at = now()
         where t.thread_id = p_thread_id
           and t.accessed_at < now() - interval '1 minute';
    end if;

    return v_data::text;
end;
$$;

-- Delete a thread. True only when a live thread was removed; an expired row
-- is removed too but reported as false, as if it had already gone.
create or replace function public.thread_delete(p_thread_id text)
returns boolean
language sql
volatile
security invoker
set search_path = ''
as $$
    with gone as (
        delete from public.conversation_threads t
         where t.thread_id = p_thread_id
        returning t.expires_at > now() as was_live
    )
    select coalesce((select was_live from gone), false);
$$;

-- Delete at most one batch of expired rows and return how many went.
-- SKIP LOCKED lets concurrent sweepers (pg_cron and a system cron script)
-- share the backlog without waiting on each other; small batches keep locks
-- short. Callers loop until a call returns less than p_batch_size.
create or replace function public.cleanup_expired_threads(p_batch_size integer default 1000)
returns integer
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
    v_deleted integer;
begin
    if p_batch_size is null or p_batch_size <= 0 then
        raise exception 'batch_size must be a positive integer, got %', p_batch_size
            using errcode = '22023';
    end if;

    with batch as (
        select t.ctid
          from public.conversation_threads t
         where t.expires_at <= now()
         order by t.expires_at
         limit p_batch_size
           for update skip locked
    )
    delete from public.conversation_threads t
     using batch
     where t.ctid = batch.ctid;

    get diagnostics v_deleted = row_count;
    return v_deleted;
end;
$$;

-- Cheap startup check: proves reachability, that the caller may execute the
-- functions, which schema version is installed, and whether the caller can
-- see the rows at all (RLS hides them from roles that do not bypass it).
create or replace function public.storage_health()
returns jsonb
language sql
stable
security invoker
set search_path = ''
as $$
    select jsonb_build_object(
        'schema_version', 1,
        'role', current_user,
        'server_time', now(),
        'rls_enabled', c.relrowsecurity,
        'can_access_rows', (
            r.rolsuper or r.rolbypassrls
            or pg_catalog.pg_has_role(current_user, c.relowner, 'USAGE')
        )
    )
    from pg_catalog.pg_class c
    join pg_catalog.pg_namespace n on n.oid = c.relnamespace
    cross join pg_catalog.pg_roles r
    where n.nspname = 'public'
      and c.relname = 'conversation_threads'
      and r.rolname = current_user;
$$;
