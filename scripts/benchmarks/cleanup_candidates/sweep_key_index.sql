-- A sweep's keys in one row, as cleanup_expired_threads() records them, but
-- with a GIN index on the keys' hashes so that a replay finds its key
-- without reading the sweeps newer than it:
--   python scripts/benchmarks/cleanup.py --rounds 2 --batch 1000 --functions scripts/benchmarks/cleanup_candidates/sweep_key_index.sql
-- (docs/performance.md, Cleanup of a large backlog). It leaves out the purge
-- (a backlog of fresh rows has nothing to purge).
create table bench.sweeps_indexed (
    swept_at          timestamptz   not null default now(),
    newest_written_at timestamptz   not null,
    key_hashes        bigint[]      not null,
    thread_ids        text[]        not null,
    written_ats       timestamptz[] not null);
create index on bench.sweeps_indexed using gin (key_hashes);
create index on bench.sweeps_indexed (newest_written_at);

create or replace function bench.s_key_index(p_batch_size integer default 1000)
returns integer language plpgsql volatile set search_path = '' as $$
declare v_deleted integer; v_horizon timestamptz := now() - public.conversation_storage_tombstone_retention();
begin
    with batch as (
        select t.ctid from public.conversation_threads t
         where t.expires_at <= now() order by t.expires_at limit p_batch_size for update skip locked
    ), gone as (
        delete from public.conversation_threads t using batch where t.ctid = batch.ctid
        returning t.thread_id, t.updated_at
    ), swept as (
        insert into bench.sweeps_indexed (newest_written_at, key_hashes, thread_ids, written_ats)
        select max(updated_at), array_agg(pg_catalog.hashtextextended(thread_id, 0)), array_agg(thread_id),
               array_agg(updated_at)
          from gone where updated_at >= v_horizon having count(*) > 0
    )
    select count(*) into v_deleted from gone;
    return v_deleted;
end $$;
