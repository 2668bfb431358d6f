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
-- Versions are therefore random numbers from the server's strong random
-- source (gen_random_uuid: a restore or setseed() cannot replay it), drawn
-- from [2^62, 2^62 + 2^61). New rows draw theirs in the column default, which
-- thread_put (012) also uses for the rows it updates. A trigger draws a new
-- one for every other UPDATE that writes the document or the version: where
-- the version it would leave is below 2^62 (the sequence that 012 and 013
-- still name, or an operator's number), is the old one + 1 (the older write
-- functions), or is the old one while the document changed (an outside edit).
-- Versions are only ever compared for equality: nothing orders them.
--
-- The expression is written out twice rather than called as a function: a
-- function with its own search_path cannot be inlined, and its call costs
-- more than the rest of the trigger.

alter table public.conversation_threads
    alter column version set default
        ((pg_catalog.uuid_hash_extended(pg_catalog.gen_random_uuid(), 0) & 2305843009213693951) + 4611686018427387904);

create or replace function public.conversation_storage_next_version()
returns trigger
language plpgsql
volatile
security invoker
set search_path = ''
as $$
begin
    new.version := (pg_catalog.uuid_hash_extended(pg_catalog.gen_random_uuid(), 0) & 2305843009213693951)
                   + 4611686018427387904;
    return new;
end;
$$;

-- UPDATE OF: a statement that writes neither column (accessed_at, expiry,
-- metadata) never calls the trigger; the documents are only compared when
-- the version stays as it was.
drop trigger if exists conversation_threads_version on public.conversation_threads;
create trigger conversation_threads_version
    before update of version, conversation_data on public.conversation_threads
    for each row
    when (new.version < 4611686018427387904
          or new.version = old.version + 1
          or (new.version = old.version and new.conversation_data is distinct from old.conversation_data))
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
      'public.conversation_storage_next_version()',
      'public.conversation_storage_schema_version()'
  ]::regprocedure[]) as f;
