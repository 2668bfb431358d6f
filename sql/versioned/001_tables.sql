-- The tables of the conversation store, their indexes, comments and row
-- level security, and the version sequence.
--
-- Idempotent: it builds them on a fresh database, and brings a database
-- built with any prefix of the pre-release files (sql/001 to sql/015 of
-- version 0.1.0's development) to this layout, keeping every row: columns
-- those files added later are added where missing, indexes they replaced are
-- dropped. Functions, triggers, grants and the cleanup job live in
-- sql/repeatable/.

-- One JSON document per thread key, with an expiry.
create table if not exists public.conversation_threads (
    id                uuid        primary key default gen_random_uuid(),
    thread_id         text        not null unique,
    user_id           text,
    conversation_data jsonb       not null,
    created_at        timestamptz not null default now(),
    accessed_at       timestamptz not null default now(),
    expires_at        timestamptz not null,
    metadata          jsonb       not null default '{}'::jsonb,
    -- Names one document for good (sql/repeatable/20_near_cache.sql): a
    -- random number in [2^62, 2^62 + 2^61).
    version           bigint      not null default
        ((pg_catalog.uuid_hash_extended(pg_catalog.gen_random_uuid(), 0) & 2305843009213693951) + 4611686018427387904),
    updated_at        timestamptz not null default now(),
    size_bytes        integer,
    -- Mirrors the client-side key rule so that no transport can store a key
    -- that another transport would refuse to read back.
    constraint conversation_threads_thread_id_size
        check (octet_length(thread_id) between 1 and 512),
    constraint conversation_threads_metadata_is_object
        check (jsonb_typeof(metadata) = 'object')
);

-- Databases built with the pre-release files: the columns added after the
-- first of them. Rows that predate version get a random one each.
alter table public.conversation_threads
    add column if not exists version bigint not null default
        ((pg_catalog.uuid_hash_extended(pg_catalog.gen_random_uuid(), 0) & 2305843009213693951) + 4611686018427387904),
    add column if not exists updated_at timestamptz not null default now(),
    add column if not exists size_bytes integer;
-- Those versions counted from 1, then came from a sequence.
alter table public.conversation_threads
    alter column version set default
        ((pg_catalog.uuid_hash_extended(pg_catalog.gen_random_uuid(), 0) & 2305843009213693951) + 4611686018427387904);

comment on table public.conversation_threads is
    'AI conversation threads keyed by thread_id (e.g. thread:{uuid}); rows past expires_at are invisible and removed by public.cleanup_expired_threads().';
comment on column public.conversation_threads.size_bytes is
    'UTF-8 length of the JSON text as written, set by the write functions; NULL: not known (written before schema version 6), measured from conversation_data when read.';

-- The UNIQUE constraint already indexes thread_id.
-- thread_list's order: the most recently accessed live threads first.
create index if not exists conversation_threads_accessed_at_idx
    on public.conversation_threads (accessed_at desc, thread_id);
-- The same per user; it also serves the per-user erase.
create index if not exists conversation_threads_user_accessed_at_idx
    on public.conversation_threads (user_id, accessed_at desc, thread_id) where user_id is not null;
-- Cleanup's scan, carrying size_bytes so that thread_stats reads counts and
-- sizes from the index alone.
create index if not exists conversation_threads_expires_at_size_idx
    on public.conversation_threads (expires_at) include (size_bytes);
-- Rows whose size is not known yet (written before schema version 6): none
-- once thread_fill_sizes() has filled them in, so it costs nothing then.
create index if not exists conversation_threads_size_unknown_idx
    on public.conversation_threads (expires_at) where size_bytes is null;
-- Replaced by the two above; only databases built with the pre-release files have them.
drop index if exists public.conversation_threads_user_id_idx;
drop index if exists public.conversation_threads_expires_at_idx;
-- On a big busy table built with the pre-release files before their 009,
-- build the four indexes first without blocking writes, from psql (outside a
-- transaction, after adding size_bytes, which is instant):
--   create index concurrently if not exists <name> on <as above>;
-- this file then finds them and only drops the old ones.

-- RLS on with no policy: anon and authenticated see nothing, only roles that
-- bypass RLS (Supabase's service_role, the table owner) reach the rows.
alter table public.conversation_threads enable row level security;

-- Keys that left conversation_threads, with the time of their last write.
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

-- Versions below 2^62 that thread_patch and thread_replay draw (the random
-- column default and the version trigger replace them with random ones).
create sequence if not exists public.conversation_thread_versions as bigint;

-- Start above every version already stored, once, before the first use.
select pg_catalog.setval(
           'public.conversation_thread_versions',
           greatest(2147483648, coalesce((select max(t.version) from public.conversation_threads t), 0) + 1),
           false)
 where not (select s.is_called from public.conversation_thread_versions s);
