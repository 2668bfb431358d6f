-- Operator calls that stay fast on big tables (schema version 6).
--
-- Through Supabase's API every call runs as service_role, which has no
-- statement_timeout of its own and so inherits authenticator's 8 s. At
-- 1,000,000 rows, 004's thread_stats (which printed every stored document to
-- measure it) and thread_list without a user (a full scan and sort) were
-- cancelled at 8 s, listing a heavy user's threads took 2 s, and erasing a
-- user was one statement however many threads they had. Now:
--   - size_bytes keeps each document's size from when it was written, and
--     thread_stats reads counts and sizes from one index (0.3 s at 1M rows);
--   - two indexes give thread_list its order, so a listing reads about
--     p_limit rows, with or without a user (under 0.03 s);
--   - delete_user_threads_batch erases at most a batch per call; the library
--     calls it until a batch comes back short, as cleanup does.
--
-- size_bytes is the UTF-8 length of the JSON text as the client wrote it
-- (octet_length(p_data)): what the memory and SQLite backends report, so all
-- backends now agree. 004 measured Postgres's re-printed text instead (jsonb
-- prints a space after every ':' and ','); storing that would print every
-- document on every write (30 us for 5 KB, 10 ms for 2 MB), the written
-- length costs nothing. Rows written before this file have size_bytes NULL
-- and are measured from the stored text when read, as before: correct, but
-- on a big table thread_stats times out until they are rewritten, expire, or
-- are filled in with (each call a short transaction; 0.6 s here)
--   select public.thread_fill_sizes(5000);   -- repeat until it returns 0
--
-- Applying this file to a 1,000,000-row table (2 cores, 0.9-1.3 GB heap; see
-- scripts/benchmarks/operator_calls.py --upgrade-from 009_operator_scale.sql)
-- took 4 to 5 s: the column is a catalog change (nullable, no default, no
-- rewrite); the four index builds (+150 MB) take the rest, and writes to the
-- table wait for them (reads do not). Filling in the sizes of those million
-- rows then took about 2 minutes in 201 calls and, as each row is rewritten once,
-- grows table and indexes until vacuum's freed space is reused. On a big busy
-- table, build the indexes first without blocking writes, from psql (outside
-- a transaction); this file then finds them and only drops the old ones:
--   create index concurrently if not exists conversation_threads_accessed_at_idx
--       on public.conversation_threads (accessed_at desc, thread_id);
--   create index concurrently if not exists conversation_threads_user_accessed_at_idx
--       on public.conversation_threads (user_id, accessed_at desc, thread_id) where user_id is not null;
--   create index concurrently if not exists conversation_threads_expires_at_size_idx
--       on public.conversation_threads (expires_at) include (size_bytes);
--   create index concurrently if not exists conversation_threads_size_unknown_idx
--       on public.conversation_threads (expires_at) where size_bytes is null;
-- (the last two need the column: add it first, as below; it is instant).

alter table public.conversation_threads add column if not exists size_bytes integer;

comment on column public.conversation_threads.size_bytes is
    'UTF-8 length of the JSON text as written, set by the write functions; NULL: not known (written before schema version 6), measured from conversation_data when read.';

-- thread_list's order: the most recently accessed live threads first.
create index if not exists conversation_threads_accessed_at_idx
    on public.conversation_threads (accessed_at desc, thread_id);
-- The same per user; it also serves the per-user erase, so it replaces 001's
-- index on user_id alone.
create index if not exists conversation_threads_user_accessed_at_idx
    on public.conversation_threads (user_id, accessed_at desc, thread_id) where user_id is not null;
drop index if exists public.conversation_threads_user_id_idx;
-- 001's expires_at index, now carrying size_bytes: cleanup uses it as before,
-- and thread_stats can read counts and sizes from it alone (an index-only
-- scan of ~30 MB per million rows instead of the whole table, which matters
-- where the table does not fit in memory; on pages vacuum has not yet marked
-- all-visible Postgres checks the row, or plans a table scan, still without
-- opening any document).
create index if not exists conversation_threads_expires_at_size_idx
    on public.conversation_threads (expires_at) include (size_bytes);
drop index if exists public.conversation_threads_expires_at_idx;
-- Rows whose size is not known yet: all of them on a table that predates
-- this file, none once they are filled in, so it costs nothing afterwards.
create index if not exists conversation_threads_size_unknown_idx
    on public.conversation_threads (expires_at) where size_bytes is null;

-- The write functions of 006 and 007, unchanged but for size_bytes.
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

create or replace function public.thread_replay_set(
    p_thread_id   text,
    p_data        text,
    p_ttl_seconds integer,
    p_written_at  timestamptz,
    p_user_id     text  default null,
    p_metadata    jsonb default null
)
returns boolean
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
    v_applied boolean;
begin
    if p_ttl_seconds is null or p_ttl_seconds <= 0 or p_written_at is null then
        raise exception 'ttl_seconds must be positive and written_at given' using errcode = '22023';
    end if;
    if p_written_at + make_interval(secs => p_ttl_seconds) <= now() then
        return false;  -- it would have expired by now anyway
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
    where t.updated_at < p_written_at
    returning true into v_applied;

    return coalesce(v_applied, false);
end;
$$;

-- As in 004, but each branch has a plain condition that an index serves in
-- order (004's "p_user_id is null or user_id = p_user_id" could use none),
-- and only the rows returned build an item.
create or replace function public.thread_list(p_user_id text default null, p_limit integer default 50)
returns jsonb
language sql
stable
security invoker
set search_path = ''
as $$
    select coalesce(jsonb_agg(jsonb_build_object(
               'key', t.thread_id,
               'user_id', t.user_id,
               'created_at', t.created_at,
               'accessed_at', t.accessed_at,
               'expires_at', t.expires_at,
               'size_bytes', coalesce(t.size_bytes, pg_catalog.octet_length(t.conversation_data::text)),
               'metadata', t.metadata
           ) order by t.accessed_at desc, t.thread_id), '[]'::jsonb)
    from (
        (select a.* from public.conversation_threads a
          where p_user_id is null and a.expires_at > now()
          order by a.accessed_at desc, a.thread_id
          limit greatest(coalesce(p_limit, 50), 0))
        union all
        (select u.* from public.conversation_threads u
          where u.user_id = p_user_id and u.expires_at > now()
          order by u.accessed_at desc, u.thread_id
          limit greatest(coalesce(p_limit, 50), 0))
    ) t;
$$;

-- As in 004, reading stored sizes instead of printing every document: the
-- first branch is answered from conversation_threads_expires_at_size_idx,
-- the second measures the rows of unknown size (none once filled in).
create or replace function public.thread_stats()
returns jsonb
language sql
stable
security invoker
set search_path = ''
as $$
    select jsonb_build_object(
        'live', count(*) filter (where s.live),
        'expired', count(*) filter (where not s.live),
        'live_bytes', coalesce(sum(s.size) filter (where s.live), 0),
        'total_bytes', coalesce(sum(s.size), 0)
    )
    from (
        select t.expires_at > now() as live, t.size_bytes as size
          from public.conversation_threads t
         where t.size_bytes is not null
        union all
        select t.expires_at > now(), pg_catalog.octet_length(t.conversation_data::text)
          from public.conversation_threads t
         where t.size_bytes is null
    ) s;
$$;

-- Erase at most p_batch_size threads of a user, expired ones included, and
-- return how many went. Callers repeat until a call returns less than
-- p_batch_size, so each call is a bounded amount of work whatever the user's
-- thread count. Rows are locked before deleting (waiting for a concurrent
-- writer, not skipping it), so a short batch means the user has none left.
-- 004's delete_user_threads(text) stays for libraries older than schema 6.
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

    with batch as (
        select t.ctid
          from public.conversation_threads t
         where t.user_id = p_user_id
         limit p_batch_size
           for update
    )
    delete from public.conversation_threads t
     using batch
     where t.ctid = batch.ctid;

    get diagnostics v_deleted = row_count;
    return v_deleted;
end;
$$;

-- Store the size of up to p_batch_size rows written before schema 6 and
-- return how many; 0 when none is left. Their written text is gone, so this
-- is the length of the stored text, as 004 reported it. Rows another
-- transaction holds are skipped, never waited for; a later call gets them.
create or replace function public.thread_fill_sizes(p_batch_size integer default 5000)
returns integer
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
    v_filled integer;
begin
    if p_batch_size is null or p_batch_size <= 0 then
        raise exception 'batch_size must be a positive integer, got %', p_batch_size
            using errcode = '22023';
    end if;

    with batch as (
        select t.ctid
          from public.conversation_threads t
         where t.size_bytes is null
         limit p_batch_size
           for update skip locked
    )
    update public.conversation_threads t
       set size_bytes = pg_catalog.octet_length(t.conversation_data::text)
      from batch
     where t.ctid = batch.ctid;

    get diagnostics v_filled = row_count;
    return v_filled;
end;
$$;

create or replace function public.conversation_storage_schema_version()
returns integer
language sql
immutable
security invoker
set search_path = ''
as $$ select 6 $$;

select public.conversation_storage_restrict(f)
  from unnest(array[
      'public.thread_set(text, text, integer, text, jsonb)',
      'public.thread_set_if_version(text, text, integer, bigint, text, jsonb)',
      'public.thread_replay_set(text, text, integer, timestamptz, text, jsonb)',
      'public.thread_list(text, integer)',
      'public.thread_stats()',
      'public.delete_user_threads_batch(text, integer)',
      'public.thread_fill_sizes(integer)',
      'public.conversation_storage_schema_version()'
  ]::regprocedure[]) as f;
