-- A version names one document for good, whoever changed it (schema version 10).
--
-- The near cache (012) answers "unchanged" when the caller's version is the
-- row's. That holds only if every change of conversation_data moves the
-- version, and if no version is ever given twice to a thread. Two things
-- broke that:
--
--   * Writers other than this library. An operator's
--     `update ... set conversation_data = jsonb_set(...)` in Supabase's SQL or
--     table editor left the version as it was, so every daemon holding the
--     thread kept answering the old document, and a daemon's next patch was
--     merged into the edited row.
--   * Restored backups. A file-level copy or a point-in-time recovery brings
--     the version sequence back to its old value; the numbers drawn after the
--     backup were then drawn again, for other documents.
--
-- Versions are therefore random 62-bit numbers from the server's strong
-- random source (gen_random_uuid: a restore or setseed() cannot replay it),
-- and one trigger draws a new one for every UPDATE that writes the document
-- or the version, whatever the statement says the version should be. Our
-- functions' own version expressions (version + 1, nextval) now only say
-- "this is a new document"; the sequence stays because the functions of
-- 012 and 013 still name it. New rows draw theirs in the column default.
-- Versions are only ever compared for equality: nothing orders them.

create or replace function public.conversation_storage_new_version()
returns bigint
language sql
volatile
security invoker
set search_path = ''
as $$
    -- 62 random bits, never 0 (0 stands for "no live thread" in thread_set_if_version).
    select (pg_catalog.uuid_hash_extended(pg_catalog.gen_random_uuid(), 0) & 4611686018427387903) + 1
$$;

create or replace function public.conversation_storage_next_version()
returns trigger
language plpgsql
volatile
security invoker
set search_path = ''
as $$
begin
    loop
        new.version := public.conversation_storage_new_version();
        exit when new.version <> old.version;
    end loop;
    return new;
end;
$$;

alter table public.conversation_threads
    alter column version set default public.conversation_storage_new_version();

-- UPDATE OF: a statement that writes neither column (accessed_at, expiry,
-- metadata) never calls the trigger. The version test comes first: our
-- writes always change it, so the documents are only compared for an
-- outside UPDATE that leaves the version alone.
drop trigger if exists conversation_threads_version on public.conversation_threads;
create trigger conversation_threads_version
    before update of version, conversation_data on public.conversation_threads
    for each row
    when (new.version is distinct from old.version
          or new.conversation_data is distinct from old.conversation_data)
    execute function public.conversation_storage_next_version();

create or replace function public.conversation_storage_schema_version()
returns integer
language sql
immutable
security invoker
set search_path = ''
as $$ select 10 $$;

select public.conversation_storage_restrict(f)
  from unnest(array[
      'public.conversation_storage_new_version()',
      'public.conversation_storage_next_version()',
      'public.conversation_storage_schema_version()'
  ]::regprocedure[]) as f;
