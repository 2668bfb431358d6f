-- Operator calls, cleanup and the health check; each stays far inside
-- Supabase's 8 s statement timeout on a 1,000,000-row table
-- (docs/operations.md).

-- The installed schema version, on its own so that storage_health reads it.
create or replace function public.conversation_storage_schema_version()
returns integer
language sql
immutable
security invoker
set search_path = ''
as $$ select 12 $$;

-- Whether the hourly cleanup job is scheduled with pg_cron (NULL: pg_cron is
-- not enabled, or the owner cannot read cron.job). On Supabase pg_cron's
-- schema `cron` is usable by `postgres` only, so nothing service_role runs
-- may touch cron.* directly: this function runs with its owner's rights (the
-- role applying this file: `postgres` in Supabase's SQL editor and for
-- `conversation-storage migrate`). It is the only SECURITY DEFINER function
-- of the schema and is safe as one: no arguments, a fixed job name, one
-- boolean out, search_path pinned, EXECUTE for service_role only.
create or replace function public.conversation_storage_cleanup_job_scheduled()
returns boolean
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
    v_scheduled boolean;
begin
    if not exists (select 1 from pg_catalog.pg_extension where extname = 'pg_cron') then
        return null;
    end if;
    -- Dynamic, so the function can be created where pg_cron is not installed.
    execute 'select exists (select 1 from cron.job where jobname = $1)'
       into v_scheduled using 'cleanup-expired-threads';
    return v_scheduled;
exception
    when insufficient_privilege or undefined_table or invalid_schema_name then
        return null;  -- the owner cannot read cron.job either: unknown, not absent
end;
$$;

-- Cheap startup check: schema version, the caller's role, whether it can see
-- the rows (RLS hides them from roles that do not bypass it), RLS, and
-- pg_cron's state. It reads only pg_catalog and the function above, so every
-- role allowed to execute it gets an answer.
create or replace function public.storage_health()
returns jsonb
language sql
stable
security invoker
set search_path = ''
as $$
    select jsonb_build_object(
        'schema_version', public.conversation_storage_schema_version(),
        'role', current_user,
        'server_time', now(),
        'rls_enabled', c.relrowsecurity,
        'can_access_rows', (
            r.rolsuper or r.rolbypassrls
            or pg_catalog.pg_has_role(current_user, c.relowner, 'USAGE')
        ),
        'pg_cron_installed', exists (select 1 from pg_catalog.pg_extension e where e.extname = 'pg_cron'),
        'cleanup_job_scheduled', public.conversation_storage_cleanup_job_scheduled()
    )
      from pg_catalog.pg_class c
      join pg_catalog.pg_namespace n on n.oid = c.relnamespace
     cross join pg_catalog.pg_roles r
     where n.nspname = 'public'
       and c.relname = 'conversation_threads'
       and r.rolname = current_user;
$$;

-- Live threads, most recently accessed first, as one JSON array (one value,
-- so every transport reads it the same way). Each branch has a plain
-- condition that an index serves in order, and only the rows returned build
-- an item. size_bytes is the stored size, else the length of the stored text.
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

-- Give a live thread a new lifetime without rewriting its document.
create or replace function public.thread_touch(p_thread_id text, p_ttl_seconds integer)
returns boolean
language plpgsql
volatile
security invoker
set search_path = ''
as $$
begin
    if p_ttl_seconds is null or p_ttl_seconds <= 0 then
        raise exception 'ttl_seconds must be a positive integer, got %', p_ttl_seconds
            using errcode = '22023';
    end if;
    update public.conversation_threads t
       set expires_at = now() + make_interval(secs => p_ttl_seconds),
           accessed_at = now()
     where t.thread_id = p_thread_id
       and t.expires_at > now();
    return found;
end;
$$;

-- Counts and sizes, read from stored sizes instead of printing every
-- document: the first branch is answered from
-- conversation_threads_expires_at_size_idx, the second measures the rows of
-- unknown size (none once filled in).
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

-- Erase at most p_batch_size threads of a user, expired ones included (right
-- to be forgotten), leaving a tombstone per thread and recording the erasure,
-- and return how many went. Callers repeat until a call returns less than
-- p_batch_size. Rows are locked before deleting (waiting for a concurrent
-- writer, not skipping it), so a short batch means the user has none left.
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

-- Every thread of a user in one call: one batch as large as the table can
-- be, for an operator's SQL session (the library calls the batched form).
create or replace function public.delete_user_threads(p_user_id text)
returns integer
language sql
volatile
security invoker
set search_path = ''
as $$
    select public.delete_user_threads_batch(p_user_id, 2147483647);
$$;

-- Delete at most one batch of expired rows, recording their keys and the
-- time of each one's last write in conversation_thread_sweeps, a row per
-- 1,000 keys (003_cleanup_sweeps.sql: a tombstone per row cost as much as
-- the delete), and purge up to p_batch_size tombstones and sweeps past the
-- retention. Returns rows removed plus tombstones and swept keys purged.
-- SKIP LOCKED lets concurrent sweepers (pg_cron and a system cron script)
-- share the backlog; callers loop until a call returns less than
-- p_batch_size.
create or replace function public.cleanup_expired_threads(p_batch_size integer default 1000)
returns integer
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
    v_deleted integer := 0;
    v_step    integer;
    v_stepped integer;
    v_purged  integer;
    v_unswept integer;
    v_horizon timestamptz := now() - public.conversation_storage_tombstone_retention();
begin
    if p_batch_size is null or p_batch_size <= 0 then
        raise exception 'batch_size must be a positive integer, got %', p_batch_size
            using errcode = '22023';
    end if;

    -- Steps of at most 1,000 rows, each recorded in one row, so that an
    -- operator's call with a huge batch neither builds an array past
    -- PostgreSQL's 1 GB limit nor makes a replay read a giant row. Rows
    -- last written before the horizon need no record: a replay that old is
    -- refused as too_old.
    loop
        v_step := least(1000, p_batch_size - v_deleted);
        with batch as (
            select t.ctid
              from public.conversation_threads t
             where t.expires_at <= now()
             order by t.expires_at
             limit v_step
               for update skip locked
        ), gone as (
            delete from public.conversation_threads t
             using batch
             where t.ctid = batch.ctid
            returning t.thread_id, t.updated_at
        ), swept as (
            insert into public.conversation_thread_sweeps (newest_written_at, thread_ids, written_ats)
            select max(updated_at), array_agg(thread_id), array_agg(updated_at)
              from gone
             where updated_at >= v_horizon
            having count(*) > 0
        )
        select count(*) into v_stepped from gone;
        v_deleted := v_deleted + v_stepped;
        exit when v_stepped < v_step or v_deleted >= p_batch_size;
    end loop;

    -- Both purges stay index-bound however stale the tables' statistics are
    -- (a sweep adds rows on every call, faster than autoanalyze sees): the
    -- order makes the choice a range scan of the time's index that stops at
    -- the first row inside the retention, and the array of row ids a TID
    -- scan. Planned as a scan of the whole table (a join on ctid, no order),
    -- each call read every tombstone: up to a quarter of a 1,000,000-row
    -- sweep's time (docs/performance.md).
    delete from public.conversation_thread_tombstones b
     where b.ctid = any (array(
               select o.ctid
                 from public.conversation_thread_tombstones o
                where o.written_at < v_horizon
                order by o.written_at
                limit p_batch_size
                  for update skip locked));
    get diagnostics v_purged = row_count;

    with unswept as (
        delete from public.conversation_thread_sweeps s
         where s.ctid = any (array(
                   select o.ctid
                     from public.conversation_thread_sweeps o
                    where o.newest_written_at < v_horizon
                    order by o.newest_written_at
                    limit p_batch_size
                      for update skip locked))
        returning pg_catalog.cardinality(s.thread_ids) as keys
    )
    select coalesce(sum(keys), 0) into v_unswept from unswept;

    delete from public.conversation_user_erasures e where e.erased_at < v_horizon;

    return v_deleted + v_purged + v_unswept;
end;
$$;

-- Store the size of up to p_batch_size rows written before schema version 6
-- and return how many; 0 when none is left. Their written text is gone, so
-- this is the length of the stored text. Rows another transaction holds are
-- skipped, never waited for; a later call gets them. `conversation-storage
-- migrate` calls it until it returns 0.
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

select public.conversation_storage_restrict(f)
  from unnest(array[
      'public.conversation_storage_schema_version()',
      'public.conversation_storage_cleanup_job_scheduled()',
      'public.storage_health()',
      'public.thread_list(text, integer)',
      'public.thread_touch(text, integer)',
      'public.thread_stats()',
      'public.delete_user_threads_batch(text, integer)',
      'public.delete_user_threads(text)',
      'public.cleanup_expired_threads(integer)',
      'public.thread_fill_sizes(integer)'
  ]::regprocedure[]) as f;
