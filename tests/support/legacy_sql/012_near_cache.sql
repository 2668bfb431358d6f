-- Cheap threads over a slow link (schema version 8).
--
-- A daemon far from its database rewrites the whole thread on every turn and
-- reads it back before the next: bytes on the wire grow with the square of
-- the turns. The library therefore keeps, per process, the last version of
-- the threads it read or wrote (its near cache) and:
--
--   thread_fetch(key, known_version)  answers {"version": v} alone when the
--       live thread is still at the version the caller holds, the document
--       only when it changed;
--   thread_put(...)                   is thread_set answering the new version;
--   thread_patch(key, base_version, patch, ...)  applies a structural patch
--       (011) to the live thread, only while it is still at base_version
--       (compare-and-set), else answers NULL and the caller writes in full.
--
-- A cached document is only ever returned after the server confirmed its
-- version in the same round trip, so the cache saves bytes, never a check.
-- That needs a version that names one document for good: before this file
-- versions counted per row from 1, so a thread deleted and written again
-- reused version 1 and a stale copy would have matched. Versions now come
-- from one sequence: the column's default for a new row, nextval() in this
-- file's writes, and a trigger for the older write functions, which set
-- version = version + 1 (only then: a trigger's WHEN costs nothing when
-- false, a call of it would cost every write).

create sequence if not exists public.conversation_thread_versions as bigint;

-- Start above every version already stored, once, before the first use:
-- a reused number could match a copy a daemon cached before this file.
select pg_catalog.setval(
           'public.conversation_thread_versions',
           greatest(2147483648, coalesce((select max(t.version) from public.conversation_threads t), 0) + 1),
           false)
 where not (select s.is_called from public.conversation_thread_versions s);

do $$
declare
    role text;
begin
    foreach role in array array['anon', 'authenticated'] loop
        if exists (select 1 from pg_catalog.pg_roles where rolname = role) then
            execute format('revoke all on sequence public.conversation_thread_versions from %I', role);
        end if;
    end loop;
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'service_role') then
        -- The write functions run as their caller (SECURITY INVOKER).
        execute 'grant usage on sequence public.conversation_thread_versions to service_role';
    end if;
end;
$$;

alter table public.conversation_threads
    alter column version set default pg_catalog.nextval('public.conversation_thread_versions');

create or replace function public.conversation_storage_next_version()
returns trigger
language plpgsql
volatile
security invoker
set search_path = ''
as $$
begin
    new.version := pg_catalog.nextval('public.conversation_thread_versions');
    return new;
end;
$$;

drop trigger if exists conversation_threads_version on public.conversation_threads;
create trigger conversation_threads_version
    before update of version on public.conversation_threads
    for each row
    when (new.version = old.version + 1)
    execute function public.conversation_storage_next_version();

-- The live thread: NULL when there is none; {"version": v} when it is still
-- at p_known_version; else {"version": v, "data": <JSON text>}.
-- p_known_md5, when given, is the md5 of the text the caller would return:
-- "unchanged" then also needs it to match PostgreSQL's printing of the
-- document (a caller that wrote the thread computes that text itself;
-- jsonb_text.py). Without it the document is not even read.
-- accessed_at as thread_get keeps it.
create or replace function public.thread_fetch(
    p_thread_id     text,
    p_known_version bigint default 0,
    p_known_md5     text   default null
)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
    v_version     bigint;
    v_accessed_at timestamptz;
    v_data        jsonb;
begin
    select t.version, t.accessed_at,
           case when t.version = p_known_version and p_known_md5 is null then null else t.conversation_data end
      into v_version, v_accessed_at, v_data
      from public.conversation_threads t
     where t.thread_id = p_thread_id
       and t.expires_at > now();

    if not found then
        return null;
    end if;

    if v_accessed_at < now() - interval '1 minute' then
        update public.conversation_threads t
           set accessed_at = now()
         where t.thread_id = p_thread_id
           and t.accessed_at < now() - interval '1 minute';
    end if;

    if v_version = p_known_version
       and (p_known_md5 is null or pg_catalog.md5(v_data::text) = p_known_md5) then
        return pg_catalog.jsonb_build_object('version', v_version);
    end if;
    return pg_catalog.jsonb_build_object('version', v_version, 'data', v_data::text);
end;
$$;

-- thread_set (009) answering {"version", "expires_at"}, with the optional
-- deadline of 010's *_before functions.
create or replace function public.thread_put(
    p_thread_id   text,
    p_data        text,
    p_ttl_seconds integer,
    p_user_id     text        default null,
    p_metadata    jsonb       default null,
    p_deadline    timestamptz default null
)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
    v_version    bigint;
    v_expires_at timestamptz;
begin
    -- conversation_storage_check_deadline (010), inline: on every set of a
    -- small thread, a nested call with its own search_path costs more than
    -- the check itself.
    if p_deadline is not null and now() > p_deadline then
        raise exception 'the write arrived after its deadline (%), when the caller had stopped waiting; not run',
            p_deadline using errcode = '57014';
    end if;
    if p_ttl_seconds is null or p_ttl_seconds <= 0 then
        raise exception 'ttl_seconds must be a positive integer, got %', p_ttl_seconds
            using errcode = '22023';
    end if;
    if p_metadata is not null and pg_catalog.jsonb_typeof(p_metadata) <> 'object' then
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
        version           = excluded.version,  -- the column default drew it for the proposed row
        created_at  = case when t.expires_at > now() then t.created_at else now() end,
        user_id     = case when t.expires_at > now()
                           then coalesce(p_user_id, t.user_id) else p_user_id end,
        metadata    = case when t.expires_at > now()
                           then coalesce(p_metadata, t.metadata) else excluded.metadata end
    returning t.version, t.expires_at into v_version, v_expires_at;

    return pg_catalog.jsonb_build_object('version', v_version, 'expires_at', v_expires_at);
end;
$$;

-- Rewrite the live thread at p_base_version by applying p_patch to it: the
-- same row thread_put would leave (created_at kept, user_id and metadata
-- unless new ones are given), without sending the unchanged part. NULL when
-- the thread is gone, expired or at another version: the caller then writes
-- the whole document. p_size_bytes is the new document's size as its caller
-- wrote it, what thread_put records from p_data.
create or replace function public.thread_patch(
    p_thread_id    text,
    p_base_version bigint,
    p_patch        text,
    p_size_bytes   integer,
    p_ttl_seconds  integer,
    p_user_id      text        default null,
    p_metadata     jsonb       default null,
    p_deadline     timestamptz default null
)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
    v_version    bigint;
    v_expires_at timestamptz;
begin
    -- Patches carry threads of 16 KiB and more: the nested call's cost does not show.
    perform public.conversation_storage_check_deadline(p_deadline);
    if p_ttl_seconds is null or p_ttl_seconds <= 0 then
        raise exception 'ttl_seconds must be a positive integer, got %', p_ttl_seconds
            using errcode = '22023';
    end if;
    if p_metadata is not null and pg_catalog.jsonb_typeof(p_metadata) <> 'object' then
        raise exception 'metadata must be a JSON object' using errcode = '22023';
    end if;
    if p_size_bytes is null or p_size_bytes < 0 then
        raise exception 'size_bytes must be a non-negative integer, got %', p_size_bytes
            using errcode = '22023';
    end if;

    update public.conversation_threads t set
        conversation_data = public.conversation_storage_apply_patch(t.conversation_data, p_patch::jsonb),
        size_bytes  = p_size_bytes,
        expires_at  = now() + make_interval(secs => p_ttl_seconds),
        accessed_at = now(),
        updated_at  = now(),
        version     = pg_catalog.nextval('public.conversation_thread_versions'),
        user_id     = coalesce(p_user_id, t.user_id),
        metadata    = coalesce(p_metadata, t.metadata)
     where t.thread_id = p_thread_id
       and t.version = p_base_version
       and t.expires_at > now()
    returning t.version, t.expires_at into v_version, v_expires_at;

    if not found then
        return null;
    end if;
    return pg_catalog.jsonb_build_object('version', v_version, 'expires_at', v_expires_at);
end;
$$;

create or replace function public.conversation_storage_schema_version()
returns integer
language sql
immutable
security invoker
set search_path = ''
as $$ select 8 $$;

select public.conversation_storage_restrict(f)
  from unnest(array[
      'public.conversation_storage_next_version()',
      'public.thread_fetch(text, bigint, text)',
      'public.thread_put(text, text, integer, text, jsonb, timestamptz)',
      'public.thread_patch(text, bigint, text, integer, integer, text, jsonb, timestamptz)',
      'public.conversation_storage_schema_version()'
  ]::regprocedure[]) as f;
