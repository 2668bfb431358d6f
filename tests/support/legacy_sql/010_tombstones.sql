-- Tombstones: "newer wins" for deletes and expiries too (schema version 7).
--
-- A daemon that cannot reach the store spools its writes and replays them
-- later with the time each was acknowledged (007). The replay must not undo
-- anything newer: 007 compared with the row's updated_at, which protects only
-- a row that still exists. A delete, a user erase or the cleanup of an
-- expired row left nothing to compare with, so a replay could bring back a
-- value that was deleted, or that a newer (since expired) value replaced.
--
-- Now every way a thread leaves the table leaves a tombstone: the key and the
-- time of the last write it received (a delete's own time; an expired row's
-- last update). Erasing a user also records the user and the time. The
-- replay compares with the row, the tombstone and the user's erasure, and
-- applies a spooled write only if it is newer than all of them.
--
-- Tombstones are kept 30 days (conversation_storage_tombstone_retention())
-- and then purged by cleanup_expired_threads(). A spooled write older than
-- that cannot be ordered any more; thread_replay() answers 'too_old' and the
-- library keeps it aside in its spool and logs an error instead of guessing.
--
-- Ordering uses the server's clock: direct writes stamp now(); a spooling
-- daemon stamps its writes with its estimate of the server's clock (its own
-- clock plus the offset it measured on its last answers from the server).
--
-- Deadlines: a write sent over HTTP (or through a transaction pooler) can
-- wait in a queue and run after the client gave up on it and spooled it
-- instead; stamped with that late now(), it would win over every write the
-- daemon spooled meanwhile. thread_set_before, thread_set_if_version_before
-- and thread_delete_before therefore take a deadline (the server's time, as
-- the client estimates it, after which it no longer waits for the answer)
-- and refuse to run later (SQLSTATE 57014). The library stamps the
-- spooled copy of a failed write no earlier than that deadline, so a write
-- that did run is always older than its spooled copy and what followed it.

create table if not exists public.conversation_thread_tombstones (
    thread_id  text        primary key,
    written_at timestamptz not null
);

comment on table public.conversation_thread_tombstones is
    'Keys that left conversation_threads (deleted, erased, expired and cleaned up) with the time of their last write; a replayed write older than that is superseded. Purged after conversation_storage_tombstone_retention().';

create index if not exists conversation_thread_tombstones_written_at_idx
    on public.conversation_thread_tombstones (written_at);

alter table public.conversation_thread_tombstones enable row level security;

-- Users whose threads were erased, and when: a thread of theirs spooled
-- before the erase is not replayed after it, even one the store never saw.
create table if not exists public.conversation_user_erasures (
    user_id   text        primary key,
    erased_at timestamptz not null
);

comment on table public.conversation_user_erasures is
    'Users erased by delete_user_threads(_batch) and when; a replayed write of theirs older than that is superseded. Purged with the tombstones.';

alter table public.conversation_user_erasures enable row level security;

do $$
declare
    role text;
begin
    foreach role in array array['anon', 'authenticated'] loop
        if exists (select 1 from pg_catalog.pg_roles where rolname = role) then
            execute format('revoke all on table public.conversation_thread_tombstones from %I', role);
            execute format('revoke all on table public.conversation_user_erasures from %I', role);
        end if;
    end loop;
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'service_role') then
        execute 'grant select, insert, update, delete on table public.conversation_thread_tombstones to service_role';
        execute 'grant select, insert, update, delete on table public.conversation_user_erasures to service_role';
    end if;
end;
$$;

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

-- Delete a thread (as 002) and leave a tombstone, also when there was no
-- row: a spooled write acknowledged before this delete must not reappear.
-- The advisory lock orders it with thread_replay() on the same key when
-- there is no row to lock.
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

-- As 009, leaving a tombstone per erased thread.
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

-- 004's one-statement erase, kept for libraries older than schema 6, now
-- leaving tombstones too.
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
    perform public.conversation_storage_record_erasure(p_user_id);
    with gone as (
        delete from public.conversation_threads t where t.user_id = p_user_id returning t.thread_id
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

-- As 002, but an expired row leaves a tombstone with the time of its last
-- write, and each call also purges up to p_batch_size tombstones past the
-- retention. Returns rows removed plus tombstones purged, so callers that
-- loop until a call returns less than p_batch_size drain both.
create or replace function public.cleanup_expired_threads(p_batch_size integer default 1000)
returns integer
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
    v_deleted integer;
    v_purged  integer;
    v_horizon timestamptz := now() - public.conversation_storage_tombstone_retention();
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
    ), gone as (
        delete from public.conversation_threads t
         using batch
         where t.ctid = batch.ctid
        returning t.thread_id, t.updated_at
    ), buried as (
        insert into public.conversation_thread_tombstones as b (thread_id, written_at)
        select thread_id, updated_at from gone where updated_at >= v_horizon
        on conflict (thread_id) do update
            set written_at = excluded.written_at
          where b.written_at < excluded.written_at
    )
    select count(*) into v_deleted from gone;

    with old as (
        select b.ctid
          from public.conversation_thread_tombstones b
         where b.written_at < v_horizon
         limit p_batch_size
           for update skip locked
    )
    delete from public.conversation_thread_tombstones b
     using old
     where b.ctid = old.ctid;
    get diagnostics v_purged = row_count;

    delete from public.conversation_user_erasures e where e.erased_at < v_horizon;

    return v_deleted + v_purged;
end;
$$;

-- Replay one spooled write, acknowledged at p_written_at (the server's clock
-- as the spooling daemon estimated it). p_op is 'set' or 'delete'. Answers:
--   'applied'    the write is now the thread's state;
--   'expired'    a set whose lifetime ended before now: it still supersedes
--                what it replaced, so it is applied as a delete at its time;
--   'superseded' the row or its tombstone holds a newer write: nothing done;
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
    v_applied      boolean;
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

    -- Ordered with thread_delete by the advisory lock, with every other
    -- writer (cleanup, erase, set) by the row lock; each statement below
    -- then sees what they committed.
    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended(p_thread_id, 0));
    select t.updated_at into v_row_written
      from public.conversation_threads t where t.thread_id = p_thread_id
       for update;
    select b.written_at into v_buried
      from public.conversation_thread_tombstones b where b.thread_id = p_thread_id;
    if p_op = 'set' and p_user_id is not null then
        select e.erased_at into v_erased
          from public.conversation_user_erasures e where e.user_id = p_user_id;
    end if;
    if p_written_at <= greatest(v_row_written, v_buried, v_erased) then
        return 'superseded';
    end if;

    if p_op = 'delete' or p_written_at + make_interval(secs => p_ttl_seconds) <= now() then
        delete from public.conversation_threads t where t.thread_id = p_thread_id;
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
        version     = t.version + 1,
        created_at  = case when t.expires_at > now() then t.created_at else excluded.created_at end,
        user_id     = case when t.expires_at > now()
                           then coalesce(p_user_id, t.user_id) else p_user_id end,
        metadata    = case when t.expires_at > now()
                           then coalesce(p_metadata, t.metadata) else excluded.metadata end
    -- a direct set can insert the row after the lookup above, when there was none to lock
    where t.updated_at < p_written_at
    returning true into v_applied;

    return case when v_applied then 'applied' else 'superseded' end;
end;
$$;

-- 007's replay functions, for libraries older than schema 7: the same rules.
create or replace function public.thread_replay_set(
    p_thread_id   text,
    p_data        text,
    p_ttl_seconds integer,
    p_written_at  timestamptz,
    p_user_id     text  default null,
    p_metadata    jsonb default null
)
returns boolean
language sql
volatile
security invoker
set search_path = ''
as $$
    select public.thread_replay(p_thread_id, 'set', p_written_at, p_data, p_ttl_seconds, p_user_id, p_metadata)
           = 'applied';
$$;

create or replace function public.thread_replay_delete(p_thread_id text, p_written_at timestamptz)
returns boolean
language sql
volatile
security invoker
set search_path = ''
as $$
    select public.thread_replay(p_thread_id, 'delete', p_written_at) = 'applied';
$$;

-- The write functions with a deadline, for the failover layer: the same
-- write, refused if it starts after p_deadline. New names rather than a new
-- parameter: an overload would leave PostgREST unable to choose whenever an
-- older file is applied again.
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

create or replace function public.conversation_storage_schema_version()
returns integer
language sql
immutable
security invoker
set search_path = ''
as $$ select 7 $$;

select public.conversation_storage_restrict(f)
  from unnest(array[
      'public.conversation_storage_tombstone_retention()',
      'public.conversation_storage_bury(text, timestamptz)',
      'public.conversation_storage_record_erasure(text)',
      'public.conversation_storage_check_deadline(timestamptz)',
      'public.thread_delete(text)',
      'public.thread_set_before(timestamptz, text, text, integer, text, jsonb)',
      'public.thread_set_if_version_before(timestamptz, text, text, integer, bigint, text, jsonb)',
      'public.thread_delete_before(timestamptz, text)',
      'public.delete_user_threads_batch(text, integer)',
      'public.delete_user_threads(text)',
      'public.cleanup_expired_threads(integer)',
      'public.thread_replay(text, text, timestamptz, text, integer, text, jsonb)',
      'public.thread_replay_set(text, text, integer, timestamptz, text, jsonb)',
      'public.thread_replay_delete(text, timestamptz)',
      'public.conversation_storage_schema_version()'
  ]::regprocedure[]) as f;
