-- The keys cleanup_expired_threads() removes, one row per call (and per
-- 1,000 keys of a larger batch).
--
-- A tombstone per expired row cost as much as deleting the row: a heap row
-- and two index entries at random places of the tombstone table's indexes
-- (docs/performance.md, Cleanup of a large backlog). A sweep of 1,000 rows
-- now writes one row here instead, holding the keys and the time of each
-- one's last write, and no index entry per key. thread_replay() reads them
-- alongside the tombstones; it only looks at rows whose newest write is not
-- older than the replayed one, which after an outage of minutes or hours are
-- the few sweeps of short-lived threads written since. Tombstones stay for
-- every other way a thread leaves (thread_delete, a user's erase, a replayed
-- delete), and those a sweep wrote before this file stay until they are
-- purged as before.

create table if not exists public.conversation_thread_sweeps (
    -- A key for the table editor and Supabase's linter; nothing reads by it.
    id                bigint        generated always as identity primary key,
    swept_at          timestamptz   not null default now(),
    -- The latest of written_ats: a replay older than it may be superseded
    -- by a key of this row, and the row is purged once it leaves the retention.
    newest_written_at timestamptz   not null,
    thread_ids        text[]        not null,
    written_ats       timestamptz[] not null,
    constraint conversation_thread_sweeps_aligned
        check (pg_catalog.cardinality(thread_ids) = pg_catalog.cardinality(written_ats))
);

comment on table public.conversation_thread_sweeps is
    'Keys that cleanup_expired_threads() removed, one row per call and per 1,000 keys, each with the time of its last write (written_ats[i] for thread_ids[i]); a replayed write older than that is superseded. Purged after conversation_storage_tombstone_retention().';

create index if not exists conversation_thread_sweeps_newest_written_at_idx
    on public.conversation_thread_sweeps (newest_written_at);

alter table public.conversation_thread_sweeps enable row level security;

comment on table public.conversation_thread_tombstones is
    'Keys that left conversation_threads by a delete, an erase or a replayed delete or expiry (a sweep of expired rows records its keys in conversation_thread_sweeps), with the time of their last write; a replayed write older than that is superseded. Purged after conversation_storage_tombstone_retention().';
