-- Variants of cleanup_expired_threads' sweep, for
--   python scripts/benchmarks/cleanup.py --rounds 1 --batch 1000 --functions scripts/benchmarks/cleanup_candidates/tombstone_writes.sql
-- (docs/performance.md, Cleanup of a large backlog). Each leaves out the purge of old
-- tombstones (a backlog of fresh rows has none to purge).
-- c_conflict: today's sweep as it is;
-- c_nolock: the batch without FOR UPDATE SKIP LOCKED (no lock record per row);
-- c_nolock_plain: and the tombstones by a plain INSERT of the missing ones (no speculative insertion);
-- c_lock_plain: the lock kept, the plain INSERT.
create or replace function bench.c_conflict(p_batch_size integer default 1000)
returns integer language plpgsql volatile set search_path = '' as $$
declare v_deleted integer; v_horizon timestamptz := now() - public.conversation_storage_tombstone_retention();
begin
    with batch as (
        select t.ctid from public.conversation_threads t
         where t.expires_at <= now() order by t.expires_at limit p_batch_size for update skip locked
    ), gone as (
        delete from public.conversation_threads t using batch where t.ctid = batch.ctid
        returning t.thread_id, t.updated_at
    ), buried as (
        insert into public.conversation_thread_tombstones as b (thread_id, written_at)
        select thread_id, updated_at from gone where updated_at >= v_horizon
        on conflict (thread_id) do update set written_at = excluded.written_at
          where b.written_at < excluded.written_at
    )
    select count(*) into v_deleted from gone;
    return v_deleted;
end $$;
create or replace function bench.c_nolock(p_batch_size integer default 1000)
returns integer language plpgsql volatile set search_path = '' as $$
declare v_deleted integer; v_horizon timestamptz := now() - public.conversation_storage_tombstone_retention();
begin
    with batch as (
        select t.ctid from public.conversation_threads t
         where t.expires_at <= now() order by t.expires_at limit p_batch_size
    ), gone as (
        delete from public.conversation_threads t using batch
         where t.ctid = batch.ctid and t.expires_at <= now()
        returning t.thread_id, t.updated_at
    ), buried as (
        insert into public.conversation_thread_tombstones as b (thread_id, written_at)
        select thread_id, updated_at from gone where updated_at >= v_horizon
        on conflict (thread_id) do update set written_at = excluded.written_at
          where b.written_at < excluded.written_at
    )
    select count(*) into v_deleted from gone;
    return v_deleted;
end $$;
create or replace function bench.c_nolock_plain(p_batch_size integer default 1000)
returns integer language plpgsql volatile set search_path = '' as $$
declare v_deleted integer; v_horizon timestamptz := now() - public.conversation_storage_tombstone_retention();
begin
    with batch as (
        select t.ctid from public.conversation_threads t
         where t.expires_at <= now() order by t.expires_at limit p_batch_size
    ), gone as (
        delete from public.conversation_threads t using batch
         where t.ctid = batch.ctid and t.expires_at <= now()
        returning t.thread_id, t.updated_at
    ), buried as (
        insert into public.conversation_thread_tombstones as b (thread_id, written_at)
        select g.thread_id, g.updated_at from gone g where g.updated_at >= v_horizon
          and not exists (select 1 from public.conversation_thread_tombstones o where o.thread_id = g.thread_id)
    )
    select count(*) into v_deleted from gone;
    return v_deleted;
end $$;
create or replace function bench.c_lock_plain(p_batch_size integer default 1000)
returns integer language plpgsql volatile set search_path = '' as $$
declare v_deleted integer; v_horizon timestamptz := now() - public.conversation_storage_tombstone_retention();
begin
    with batch as (
        select t.ctid from public.conversation_threads t
         where t.expires_at <= now() order by t.expires_at limit p_batch_size for update skip locked
    ), gone as (
        delete from public.conversation_threads t using batch
         where t.ctid = batch.ctid
        returning t.thread_id, t.updated_at
    ), buried as (
        insert into public.conversation_thread_tombstones as b (thread_id, written_at)
        select g.thread_id, g.updated_at from gone g where g.updated_at >= v_horizon
          and not exists (select 1 from public.conversation_thread_tombstones o where o.thread_id = g.thread_id)
    )
    select count(*) into v_deleted from gone;
    return v_deleted;
end $$;
