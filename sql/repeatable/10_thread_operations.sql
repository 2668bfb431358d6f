-- One function per storage operation: each client call is a single round
-- trip, atomic, and judged on the server's clock (now()), never the client's.
-- Every function: SECURITY INVOKER (but the one noted in 40_operator_calls),
-- search_path pinned to '' and fully qualified names, so a caller cannot
-- redirect lookups to objects of its own.
--
-- Every way a thread leaves the table records the key and the time of the
-- last write it received: a delete leaves a tombstone with its own time, a
-- cleanup sweep one row of keys with each expired row's last update
-- (conversation_thread_sweeps). Erasing a user also records the user and
-- the time. thread_replay (30_failover_replay) applies a spooled write only
-- if it is newer than all of them. Both are kept
-- conversation_storage_tombstone_retention() and then purged by
-- cleanup_expired_threads().
--
-- Deadlines: a write sent over HTTP (or through a transaction pooler) can
-- wait in a queue and run after the client gave up on it and spooled it
-- instead. The *_before functions therefore take a deadline (the server's
-- time, as the client estimates it, after which it no longer waits for the
-- answer) and refuse to run later (SQLSTATE 57014). New names rather than a
-- new parameter: an overload would leave PostgREST unable to choose.

create or replace function public.conversation_storage_tombstone_retention()
returns interval
language sql
immutable
security invoker
set search_path = ''
as $$ select interval '30 days' $$;

-- Record that p_thread_id's writes up to p_written_at are superseded.
create or replace function public.conversation_storage_bury(p_thread_id text, p_written_at timestamptz)
returns void
language sql
volatile
security invoker
set search_path = ''
as $$
    insert into public.conversation_thread_tombstones as b (thread_id, written_at)
    values (p_thread_id, p_written_at)
    on conflict (thread_id) do update
        set written_at = excluded.written_at
      where b.written_at < excluded.written_at;
$$;

create or replace function public.conversation_storage_record_erasure(p_user_id text)
returns void
language sql
volatile
security invoker
set search_path = ''
as $$
    insert into public.conversation_user_erasures as e (user_id, erased_at)
    values (p_user_id, now())
    on conflict (user_id) do update
        set erased_at = excluded.erased_at
      where e.erased_at < excluded.erased_at;
$$;

-- The lock of a user's erasure: the two-number form of advisory locks,
-- a space of its own, apart from the per-key locks of thread_delete.
create or replace function public.conversation_storage_lock_user(p_user_id text, p_shared boolean)
returns void
language plpgsql
volatile
security invoker
set search_path = ''
as $$
begin
    if p_shared then
        perform pg_catalog.pg_advisory_xact_lock_shared(1970496882, pg_catalog.hashtext(p_user_id));
    else
        perform pg_catalog.pg_advisory_xact_lock(1970496882, pg_catalog.hashtext(p_user_id));
    end if;
end;
$$;

-- Refuse a write that starts after the caller stopped waiting for it.
create or replace function public.conversation_storage_check_deadline(p_deadline timestamptz)
returns void
language plpgsql
stable
security invoker
set search_path = ''
as $$
begin
    if p_deadline is not null and now() > p_deadline then
        raise exception 'the write arrived after its deadline (%), when the caller had stopped waiting; not run',
            p_deadline using errcode = '57014';
    end if;
end;
$$;

-- Read a live thread as JSON text (text, not jsonb: a stored JSON null must
-- stay distinguishable from "no such thread", which is SQL NULL).
-- Expired rows are filtered, not deleted: reads stay cheap and cleanup is
-- left to cleanup_expired_threads(). accessed_at is refreshed at most once a
-- minute per thread so hot reads do not each cost a row write. The library
-- calls it with its near cache off; thread_fetch (20_near_cache) otherwise.
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

-- A live thread with its version: {"data": <JSON text>, "version": n};
-- {"data": null, "version": 0} when there is none.
create or replace function public.thread_get_versioned(p_thread_id text)
returns jsonb
language sql
stable
security invoker
set search_path = ''
as $$
    select coalesce(
        (select jsonb_build_object('data', t.conversation_data::text, 'version', t.version)
           from public.conversation_threads t
          where t.thread_id = p_thread_id and t.expires_at > now()),
        jsonb_build_object('data', null, 'version', 0)
    );
$$;

-- Store (insert or replace) a thread, answering its expiry: thread_put
-- (20_near_cache) without the version. The library calls thread_set and
-- thread_set_before only where thread_put is missing: on a schema older than
-- version 10, or through a PostgREST whose schema cache predates it (after
-- `migrate`, until PostgREST reloads), so that such a daemon keeps storing.
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
        raise exception 'metadata must be a JSON object' using errcode = '22023';
    end if;

    insert into public.conversation_threads as t
        (thread_id, user_id, conversation_data, size_bytes, expires_at, metadata)
    values
        (p_thread_id, p_user_id, p_data::jsonb, pg_catalog.octet_length(p_data),
         now() + make_interval(secs => p_ttl_seconds), coalesce(p_metadata, '{}'::jsonb))
    on conflict (thread_id) do update set
        conversation_data = excluded.conversation_data,
        size_bytes        = excluded.size_bytes,
        expires_at        = excluded.expires_at,
        accessed_at       = now(),
        updated_at        = now(),
        version           = t.version + 1,
        created_at  = case when t.expires_at > now() then t.created_at else now() end,
        user_id     = case when t.expires_at > now()
                           then coalesce(p_user_id, t.user_id) else p_user_id end,
        metadata    = case when t.expires_at > now()
                           then coalesce(p_metadata, t.metadata) else excluded.metadata end
    returning t.expires_at into v_expires_at;

    return v_expires_at;
end;
$$;

create or replace function public.thread_set_before(
    p_deadline    timestamptz,
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
begin
    perform public.conversation_storage_check_deadline(p_deadline);
    return public.thread_set(p_thread_id, p_data, p_ttl_seconds, p_user_id, p_metadata);
end;
$$;

-- Write only if the thread is still at p_expected_version (0: no live
-- thread). Returns the new version, or NULL when another writer came first;
-- update()'s compare-and-set.
create or replace function public.thread_set_if_version(
    p_thread_id        text,
    p_data             text,
    p_ttl_seconds      integer,
    p_expected_version bigint,
    p_user_id          text  default null,
    p_metadata         jsonb default null
)
returns bigint
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
    v_version bigint;
begin
    if p_ttl_seconds is null or p_ttl_seconds <= 0 then
        raise exception 'ttl_seconds must be a positive integer, got %', p_ttl_seconds
            using errcode = '22023';
    end if;

    if p_expected_version = 0 then
        insert into public.conversation_threads as t
            (thread_id, user_id, conversation_data, size_bytes, expires_at, metadata)
        values
            (p_thread_id, p_user_id, p_data::jsonb, pg_catalog.octet_length(p_data),
             now() + make_interval(secs => p_ttl_seconds), coalesce(p_metadata, '{}'::jsonb))
        on conflict (thread_id) do update set
            conversation_data = excluded.conversation_data,
            size_bytes  = excluded.size_bytes,
            expires_at  = excluded.expires_at,
            accessed_at = now(),
            updated_at  = now(),
            created_at  = now(),
            version     = t.version + 1,
            user_id     = excluded.user_id,
            metadata    = excluded.metadata
        where t.expires_at <= now()
        returning t.version into v_version;
    else
        update public.conversation_threads t set
            conversation_data = p_data::jsonb,
            size_bytes  = pg_catalog.octet_length(p_data),
            expires_at  = now() + make_interval(secs => p_ttl_seconds),
            accessed_at = now(),
            updated_at  = now(),
            version     = t.version + 1,
            user_id     = coalesce(p_user_id, t.user_id),
            metadata    = coalesce(p_metadata, t.metadata)
         where t.thread_id = p_thread_id
           and t.version = p_expected_version
           and t.expires_at > now()
        returning t.version into v_version;
    end if;
    return v_version;
end;
$$;

create or replace function public.thread_set_if_version_before(
    p_deadline         timestamptz,
    p_thread_id        text,
    p_data             text,
    p_ttl_seconds      integer,
    p_expected_version bigint,
    p_user_id          text  default null,
    p_metadata         jsonb default null
)
returns bigint
language plpgsql
volatile
security invoker
set search_path = ''
as $$
begin
    perform public.conversation_storage_check_deadline(p_deadline);
    return public.thread_set_if_version(p_thread_id, p_data, p_ttl_seconds, p_expected_version,
                                        p_user_id, p_metadata);
end;
$$;

-- Delete a thread and leave a tombstone, also when there was no row: a
-- spooled write acknowledged before this delete must not reappear. The
-- advisory lock orders it with thread_replay() on the same key when there is
-- no row to lock. True only when a live thread was removed.
create or replace function public.thread_delete(p_thread_id text)
returns boolean
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
    v_was_live boolean;
begin
    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended(p_thread_id, 0));
    delete from public.conversation_threads t
     where t.thread_id = p_thread_id
    returning t.expires_at > now() into v_was_live;
    perform public.conversation_storage_bury(p_thread_id, now());
    return coalesce(v_was_live, false);
end;
$$;

create or replace function public.thread_delete_before(p_deadline timestamptz, p_thread_id text)
returns boolean
language plpgsql
volatile
security invoker
set search_path = ''
as $$
begin
    perform public.conversation_storage_check_deadline(p_deadline);
    return public.thread_delete(p_thread_id);
end;
$$;

select public.conversation_storage_restrict(f)
  from unnest(array[
      'public.conversation_storage_tombstone_retention()',
      'public.conversation_storage_bury(text, timestamptz)',
      'public.conversation_storage_record_erasure(text)',
      'public.conversation_storage_lock_user(text, boolean)',
      'public.conversation_storage_check_deadline(timestamptz)',
      'public.thread_get(text)',
      'public.thread_set(text, text, integer, text, jsonb)',
      'public.thread_set_before(timestamptz, text, text, integer, text, jsonb)',
      'public.thread_get_versioned(text)',
      'public.thread_set_if_version(text, text, integer, bigint, text, jsonb)',
      'public.thread_set_if_version_before(timestamptz, text, text, integer, bigint, text, jsonb)',
      'public.thread_delete(text)',
      'public.thread_delete_before(timestamptz, text)'
  ]::regprocedure[]) as f;
