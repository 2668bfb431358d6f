-- A sweep's record with its arrays compressed by lz4 rather than pglz
-- (s_lz4), and stored without compression (s_external), otherwise as
-- cleanup_expired_threads() writes it:
--   python scripts/benchmarks/cleanup.py --rounds 2 --batch 1000 --pre-tombstones --functions scripts/benchmarks/cleanup_candidates/sweep_compression.sql
-- (docs/performance.md, Cleanup of a large backlog). lz4 needs a server
-- built with it (Debian's and Supabase's are). Each leaves out the purge.
create table bench.sweeps_lz4 (
    id bigint generated always as identity primary key,
    swept_at timestamptz not null default now(),
    newest_written_at timestamptz not null,
    thread_ids text[] compression lz4 not null,
    written_ats timestamptz[] compression lz4 not null);
create index on bench.sweeps_lz4 (newest_written_at);
create table bench.sweeps_external (like bench.sweeps_lz4 including all);
alter table bench.sweeps_external alter column thread_ids set storage external, alter column written_ats set storage external;
create or replace function bench.s_lz4(p_batch_size integer default 1000)
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
        insert into bench.sweeps_lz4 (newest_written_at, thread_ids, written_ats)
        select max(updated_at), array_agg(thread_id), array_agg(updated_at)
          from gone where updated_at >= v_horizon having count(*) > 0
    )
    select count(*) into v_deleted from gone;
    return v_deleted;
end $$;
create or replace function bench.s_external(p_batch_size integer default 1000)
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
        insert into bench.sweeps_external (newest_written_at, thread_ids, written_ats)
        select max(updated_at), array_agg(thread_id), array_agg(updated_at)
          from gone where updated_at >= v_horizon having count(*) > 0
    )
    select count(*) into v_deleted from gone;
    return v_deleted;
end $$;
