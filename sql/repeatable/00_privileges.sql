-- Privileges: every storage function and table for service_role only.
--
-- Supabase grants EXECUTE on new functions in public to anon and
-- authenticated by default (on top of PUBLIC's default), and every right on
-- new tables; both are taken back explicitly. Role-specific statements are
-- guarded so the file applies cleanly on a plain Postgres where those roles
-- do not exist. Each later file calls conversation_storage_restrict() for the
-- functions it defines. A new table (a new file of sql/versioned/) gets its
-- grants here.

-- conversation_storage_restrict(f): the rule above for one function. It is
-- not for clients: only its owner may execute it.
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

select public.conversation_storage_restrict('public.conversation_storage_restrict(regprocedure)'::regprocedure);

-- Table privileges: RLS already hides rows from anon/authenticated; taking
-- the grants away as well means a later careless policy cannot expose them.
do $$
declare
    role text;
begin
    foreach role in array array['anon', 'authenticated'] loop
        if exists (select 1 from pg_catalog.pg_roles where rolname = role) then
            execute format('revoke all on table public.conversation_threads from %I', role);
            execute format('revoke all on table public.conversation_thread_tombstones from %I', role);
            execute format('revoke all on table public.conversation_thread_sweeps from %I', role);
            execute format('revoke all on sequence public.conversation_thread_sweeps_id_seq from %I', role);
            execute format('revoke all on table public.conversation_user_erasures from %I', role);
            execute format('revoke all on sequence public.conversation_thread_versions from %I', role);
        end if;
    end loop;
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'service_role') then
        execute 'grant select, insert, update, delete on table public.conversation_threads to service_role';
        execute 'grant select, insert, update, delete on table public.conversation_thread_tombstones to service_role';
        execute 'grant select, insert, update, delete on table public.conversation_thread_sweeps to service_role';
        -- Its identity column draws from its sequence without the inserting role's rights.
        execute 'revoke all on sequence public.conversation_thread_sweeps_id_seq from service_role';
        execute 'grant select, insert, update, delete on table public.conversation_user_erasures to service_role';
        -- The write functions run as their caller (SECURITY INVOKER).
        execute 'grant usage on sequence public.conversation_thread_versions to service_role';
    end if;
end;
$$;

-- The record of applied files: `conversation-storage migrate` creates
-- public.conversation_storage_migrations before the first file; on Supabase
-- the schema's default privileges then give anon and authenticated every
-- right on it, TRUNCATE included. Nothing but migrate, as the table's owner,
-- needs it.
do $$
declare
    role text;
begin
    if pg_catalog.to_regclass('public.conversation_storage_migrations') is null then
        return;  -- applied from the SQL editor, without migrate: there is no such table
    end if;
    foreach role in array array['anon', 'authenticated', 'service_role'] loop
        if exists (select 1 from pg_catalog.pg_roles where rolname = role) then
            execute format('revoke all on table public.conversation_storage_migrations from %I', role);
        end if;
    end loop;
    execute 'revoke all on table public.conversation_storage_migrations from public';
end;
$$;
