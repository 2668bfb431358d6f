-- Lock every storage function down to service_role.
-- Supabase grants EXECUTE on new functions in public to anon and
-- authenticated by default (on top of PUBLIC's default), so both are revoked
-- explicitly. Role-specific statements are guarded so the same file applies
-- cleanly on a plain Postgres where those roles do not exist.

do $$
declare
    fn   text;
    role text;
    functions constant text[] := array[
        'public.thread_set(text, text, integer, text, jsonb)',
        'public.thread_get(text)',
        'public.thread_delete(text)',
        'public.cleanup_expired_threads(integer)',
        'public.storage_health()'
    ];
begin
    foreach fn in array functions loop
        execute format('revoke execute on function %s from public', fn);
        foreach role in array array['anon', 'authenticated'] loop
            if exists (select 1 from pg_catalog.pg_roles where rolname = role) then
                execute format('revoke execute on function %s from %I', fn, role);
            end if;
        end loop;
        if exists (select 1 from pg_catalog.pg_roles where rolname = 'service_role') then
            execute format('grant execute on function %s to service_role', fn);
        end if;
    end loop;

    -- Table privileges: RLS already hides rows from anon/authenticated; taking
    -- the grants away as well means a later careless policy cannot expose them.
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
