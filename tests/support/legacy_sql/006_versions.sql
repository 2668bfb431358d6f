-- Versions for safe concurrent updates (schema version 3).
-- Every write bumps `version`; thread_set_if_version writes only when the
-- thread is still at the version the caller read, so read-modify-write
-- cycles (pal's add_turn: get, append a turn, set) cannot lose each other's
-- turns. Versions only grow, also across expiry, so an old read never
-- matches a newer incarnation of the same key.

alter table public.conversation_threads
    add column if not exists version    bigint      not null default 1,
    add column if not exists updated_at timestamptz not null default now();

-- thread_set as in 002, now also bumping version and updated_at.
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
        (thread_id, user_id, conversation_data, expires_at, metadata)
    values
        (p_thread_id, p_user_id, p_data::jsonb,
         now() + make_interval(secs => p_ttl_seconds), coalesce(p_metadata, '{}'::jsonb))
    on conflict (thread_id) do update set
        conversation_data = excluded.conversation_data,
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

-- A live thread with its version: {"data": <JSON text>, "version": n};
-- {"data": null, "version": 0} when there is none.
create or replace function public.thread_get_versioned(p_thread_id text)
returns jsonb
language sql
stable
security invoker
set search_path = ''
as $$
    select coalesce(
        (select jsonb_build_object('data', t.conversation_data::text, 'version', t.version)
           from public.conversation_threads t
          where t.thread_id = p_thread_id and t.expires_at > now()),
        jsonb_build_object('data', null, 'version', 0)
    );
$$;

-- Write only if the thread is still at p_expected_version (0: no live
-- thread). Returns the new version, or NULL when another writer came first.
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
            (thread_id, user_id, conversation_data, expires_at, metadata)
        values
            (p_thread_id, p_user_id, p_data::jsonb,
             now() + make_interval(secs => p_ttl_seconds), coalesce(p_metadata, '{}'::jsonb))
        on conflict (thread_id) do update set
            conversation_data = excluded.conversation_data,
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

create or replace function public.conversation_storage_schema_version()
returns integer
language sql
immutable
security invoker
set search_path = ''
as $$ select 3 $$;

select public.conversation_storage_restrict(f)
  from unnest(array[
      'public.thread_get_versioned(text)',
      'public.thread_set_if_version(text, text, integer, bigint, text, jsonb)'
  ]::regprocedure[]) as f;
