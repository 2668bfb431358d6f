-- Replaying writes a daemon spooled while the store was unreachable.
--
-- A spooled write carries the time it was acknowledged, on the server's
-- clock as the spooling daemon estimated it (its own clock plus the offset it
-- measured on its last answers from the server). It is applied only if it
-- is newer than the row, the key's tombstone, the cleanup sweeps that
-- removed the key and its user's erasure, so a replay never undoes a newer
-- write, delete, erase or expiry. A spooled write older than the tombstone
-- retention cannot be ordered any more: thread_replay() answers 'too_old'
-- and the library keeps it aside.
--
-- Ordering: every statement that changes the table carries the guard
-- updated_at < the spooled write's time, so whatever committed first, the
-- newer write stays: direct writes meet the replay on the row (its lock, or
-- the insert's conflict), thread_delete on the advisory lock of the key.
-- Erases take the user's advisory lock and replays of a user's write share
-- it, before touching a row. A spooled set of a user erased after it was
-- acknowledged happened, then the erase removed it: the row goes too. A
-- spooled set that names no user is replayed with the user of the write it
-- followed in the spool (the library carries it over).
--
-- p_op is 'set' or 'delete'. Answers:
--   'applied'    the write is now the thread's state;
--   'expired'    a set whose lifetime ended before now: it still supersedes
--                what it replaced, so it is applied as a delete at its time;
--   'superseded' the row, its tombstone, a sweep or its user's erasure
--                holds a newer write: nothing done;
--   'too_old'    older than the tombstone retention: cannot be ordered.
-- Replaying the same write twice is harmless: the second finds itself.
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
    -- The key's tombstone, and the sweeps that removed it. A sweep whose
    -- every key was written before this write cannot supersede it: the
    -- index on newest_written_at leaves only the others.
    select greatest(
               (select b.written_at
                  from public.conversation_thread_tombstones b where b.thread_id = p_thread_id),
               (select max(u.written_at)
                  from public.conversation_thread_sweeps s
                 cross join lateral rows from (pg_catalog.unnest(s.thread_ids), pg_catalog.unnest(s.written_ats))
                                    as u(thread_id, written_at)
                 where s.newest_written_at >= p_written_at
                   and s.thread_ids @> array[p_thread_id]
                   and u.thread_id = p_thread_id))
      into v_buried;
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

select public.conversation_storage_restrict(
    'public.thread_replay(text, text, timestamptz, text, integer, text, jsonb)'::regprocedure);
