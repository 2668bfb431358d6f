-- Replaying writes a daemon spooled while the store was unreachable (schema
-- version 4). A spooled write carries the time it was acknowledged; it is
-- applied only if nothing newer reached the row meanwhile (another daemon,
-- or this one after recovery), so a replay never overwrites a newer value.
-- The lifetime counts from the original write, not from the replay.
-- Times come from the writing daemon's clock: keep daemon clocks in sync (NTP).

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
        (thread_id, user_id, conversation_data, created_at, accessed_at, updated_at, expires_at, metadata)
    values
        (p_thread_id, p_user_id, p_data::jsonb, p_written_at, p_written_at, p_written_at,
         p_written_at + make_interval(secs => p_ttl_seconds), coalesce(p_metadata, '{}'::jsonb))
    on conflict (thread_id) do update set
        conversation_data = excluded.conversation_data,
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

-- Replay a spooled delete: removes the row only if it was not written after
-- the delete was acknowledged.
create or replace function public.thread_replay_delete(p_thread_id text, p_written_at timestamptz)
returns boolean
language sql
volatile
security invoker
set search_path = ''
as $$
    with gone as (
        delete from public.conversation_threads t
         where t.thread_id = p_thread_id and t.updated_at < p_written_at
        returning 1
    )
    select exists (select 1 from gone);
$$;

create or replace function public.conversation_storage_schema_version()
returns integer
language sql
immutable
security invoker
set search_path = ''
as $$ select 4 $$;

select public.conversation_storage_restrict(f)
  from unnest(array[
      'public.thread_replay_set(text, text, integer, timestamptz, text, jsonb)',
      'public.thread_replay_delete(text, timestamptz)'
  ]::regprocedure[]) as f;
