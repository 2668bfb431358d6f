-- Lock every storage function down to service_role.
-- Supabase grants EXECUTE on new functions in public to anon and
-- authenticated by default (on top of PUBLIC's default), so both are revoked
-- explicitly. Role-specific statements are guarded so the same file applies
-- cleanly on a plain Postgres where those roles do not exist.

-- conversation_storage_restrict(f): the rule above for one function. Later
-- files call it for the functions they add. It is not for clients: only its
-- owner may execute it.
create or replace function public.conversation_storage_restrict(p_function regprocedure)
returns void
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
    role text;
begin
    execute format('revoke execute on function %s from public', p_function);
    foreach role in array array['anon', 'authenticated', 'service_role'] loop
        if exists (select 1 from pg_catalog.pg_roles where rolname = role) then
            execute format('revoke execute on function %s from %I', p_function, role);
        end if;
    end loop;
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'service_role')
       and p_function <> 'public.conversation_storage_restrict(regprocedure)'::regprocedure then
        execute format('grant execute on function %s to service_role', p_function);
    end if;
end;
$$;

select public.conversation_storage_restrict(f)
  from unnest(array[
      'public.conversation_storage_restrict(regprocedure)',
      'public.thread_set(text, text, integer, text, jsonb)',
      'public.thread_get(text)',
      'public.thread_delete(text)',
      'public.cleanup_expired_threads(integer)',
      'public.storage_health()'
  ]::regprocedure[]) as f;

-- Table privileges: RLS already hides rows from anon/authenticated; taking
-- the grants away as well means a later careless policy cannot expose them.
do $$
declare
    role text;
begin
    foreach role in array array['anon', 'authenticated'] loop
        if exists (select 1 from pg_catalog.pg_roles where rolname = role) then
            execute format('revoke all on table public.conversation_threads from %I', role);
        end if;
    end loop;
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'service_role') then
        execute 'grant select, insert, update, delete on table public.conversation_threads to service_role';
    end if;
end;
$$;
