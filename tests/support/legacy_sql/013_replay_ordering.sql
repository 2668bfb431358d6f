-- Replays ordered against every other writer, and erasures that cover
-- every thread of the user (schema version 9).
--
-- 1. A replay that found no row held no lock on one, and its delete had no
--    "older than" guard: a direct write committed between its lookup and its
--    delete was removed by an older spooled delete (or by a spooled set that
--    expired before its replay). Every statement of thread_replay that
--    changes the table now carries the guard (updated_at < the spooled
--    write's time), so whatever committed first, the newer write stays:
--    direct writes meet the replay on the row (its lock, or the insert's
--    conflict), thread_delete on the advisory lock of the key.
--
-- 2. An erase recorded the user while a replay of that user's thread could
--    already have read "no erasure" and then insert the row after the erase
--    committed. Erases now take the user's advisory lock and replays of a
--    user's write share it, before touching a row (so neither waits on the
--    other while holding a row lock).
--
-- 3. A spooled set of a user erased after it was acknowledged was simply not
--    applied, which left the older value it had replaced (pal's set naming
--    no user) in the row. It happened, then the erase removed it: the row
--    goes too.
--
-- A spooled set that names no user is replayed with the user of the write
-- it followed in the spool (the library carries it over), so pal's setex
-- after a set_with_ttl(..., user_id=U) is checked against U's erasure too.

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

create or replace function public.delete_user_threads_batch(p_user_id text, p_batch_size integer)
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
    if p_batch_size is null or p_batch_size <= 0 then
        raise exception 'batch_size must be a positive integer, got %', p_batch_size
            using errcode = '22023';
    end if;

    perform public.conversation_storage_lock_user(p_user_id, false);
    perform public.conversation_storage_record_erasure(p_user_id);
    with batch as (
        select t.ctid
          from public.conversation_threads t
         where t.user_id = p_user_id
         limit p_batch_size
           for update
    ), gone as (
        delete from public.conversation_threads t
         using batch
         where t.ctid = batch.ctid
        returning t.thread_id
    ), buried as (
        insert into public.conversation_thread_tombstones as b (thread_id, written_at)
        select thread_id, now() from gone
        on conflict (thread_id) do update
            set written_at = excluded.written_at
          where b.written_at < excluded.written_at
    )
    select count(*) into v_deleted from gone;
    return v_deleted;
end;
$$;

-- 004's one-statement erase, kept for libraries older than schema 6: one
-- batch as large as the table can be, so it takes the same lock.
create or replace function public.delete_user_threads(p_user_id text)
returns integer
language sql
volatile
security invoker
set search_path = ''
as $$
    select public.delete_user_threads_batch(p_user_id, 2147483647);
$$;

-- As 010, with the guards and the user's lock described above.
create or replace function public.thread_replay(
    p_thread_id   text,
    p_op          text,
    p_written_at  timestamptz,
    p_data        text     default null,
    p_ttl_seconds integer  default null,
    p_user_id     text     default null,
    p_metadata    jsonb    default null
)
returns text
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
    v_row_written  timestamptz;
    v_buried       timestamptz;
    v_erased       timestamptz;
    v_changed      boolean;
begin
    if p_written_at is null or p_op is null or p_op not in ('set', 'delete') then
        raise exception 'op must be set or delete, and written_at given' using errcode = '22023';
    end if;
    if p_op = 'set' and (p_ttl_seconds is null or p_ttl_seconds <= 0 or p_data is null) then
        raise exception 'a replayed set needs data and a positive ttl_seconds' using errcode = '22023';
    end if;
    if p_written_at < now() - public.conversation_storage_tombstone_retention() then
        return 'too_old';
    end if;

    -- Locks in one order everywhere: the key's, the user's, then the row.
    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended(p_thread_id, 0));
    if p_op = 'set' and p_user_id is not null then
        perform public.conversation_storage_lock_user(p_user_id, true);
        select e.erased_at into v_erased
          from public.conversation_user_erasures e where e.user_id = p_user_id;
    end if;
    select t.updated_at into v_row_written
      from public.conversation_threads t where t.thread_id = p_thread_id
       for update;
    select b.written_at into v_buried
      from public.conversation_thread_tombstones b where b.thread_id = p_thread_id;
    if p_written_at <= greatest(v_row_written, v_buried) then
        return 'superseded';
    end if;
    if p_written_at <= v_erased then
        -- Acknowledged before its user was erased: it replaced what the row
        -- holds, then the erase removed it. Neither comes back.
        delete from public.conversation_threads t
         where t.thread_id = p_thread_id and t.updated_at < p_written_at;
        perform public.conversation_storage_bury(p_thread_id, v_erased);
        return 'superseded';
    end if;

    if p_op = 'delete' or p_written_at + make_interval(secs => p_ttl_seconds) <= now() then
        -- The guard: a row written since the lookup above (there was none to lock) is newer.
        with gone as (
            delete from public.conversation_threads t
             where t.thread_id = p_thread_id and t.updated_at < p_written_at
            returning 1
        )
        select not exists (select 1 from public.conversation_threads t
                            where t.thread_id = p_thread_id and t.updated_at >= p_written_at)
          into v_changed;
        if not v_changed then
            return 'superseded';
        end if;
        perform public.conversation_storage_bury(p_thread_id, p_written_at);
        return case when p_op = 'delete' then 'applied' else 'expired' end;
    end if;

    insert into public.conversation_threads as t
        (thread_id, user_id, conversation_data, size_bytes, created_at, accessed_at, updated_at,
         expires_at, metadata)
    values
        (p_thread_id, p_user_id, p_data::jsonb, pg_catalog.octet_length(p_data),
         p_written_at, p_written_at, p_written_at,
         p_written_at + make_interval(secs => p_ttl_seconds), coalesce(p_metadata, '{}'::jsonb))
    on conflict (thread_id) do update set
        conversation_data = excluded.conversation_data,
        size_bytes  = excluded.size_bytes,
        expires_at  = excluded.expires_at,
        updated_at  = excluded.updated_at,
        version     = pg_catalog.nextval('public.conversation_thread_versions'),
        created_at  = case when t.expires_at > now() then t.created_at else excluded.created_at end,
        user_id     = case when t.expires_at > now()
                           then coalesce(p_user_id, t.user_id) else p_user_id end,
        metadata    = case when t.expires_at > now()
                           then coalesce(p_metadata, t.metadata) else excluded.metadata end
    where t.updated_at < p_written_at
    returning true into v_changed;

    return case when v_changed then 'applied' else 'superseded' end;
end;
$$;

create or replace function public.conversation_storage_schema_version()
returns integer
language sql
immutable
security invoker
set search_path = ''
as $$ select 9 $$;

select public.conversation_storage_restrict(f)
  from unnest(array[
      'public.conversation_storage_lock_user(text, boolean)',
      'public.delete_user_threads_batch(text, integer)',
      'public.delete_user_threads(text)',
      'public.thread_replay(text, text, timestamptz, text, integer, text, jsonb)',
      'public.conversation_storage_schema_version()'
  ]::regprocedure[]) as f;
