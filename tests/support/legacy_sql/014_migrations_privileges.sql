-- The record of applied files, locked down like the threads (schema version
-- unchanged). `conversation-storage migrate` creates
-- public.conversation_storage_migrations before the first file; on Supabase
-- the schema's default privileges then give anon and authenticated every
-- right on it, TRUNCATE included, so anyone with the public key could read
-- it through the Data API or wipe it (and migrate would apply every file
-- again). Nothing but migrate, as the table's owner, needs it.

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
