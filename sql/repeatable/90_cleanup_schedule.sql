-- Hourly cleanup with pg_cron, where the operator has enabled pg_cron: job
-- 'cleanup-expired-threads' at minute 0 of every hour (GMT) deletes expired
-- threads in batches of 1000 until the backlog is gone, committing after each
-- batch so locks stay short. A second job keeps cron.job_run_details (never
-- purged by pg_cron itself) to the last 7 days. Re-running this file updates
-- the jobs instead of adding copies.
--
-- This file never enables pg_cron: which extensions run in a database (pg_cron
-- adds a background worker and its own schema) is the operator's decision.
-- On Supabase the project owner `postgres` may create pg_cron (supautils), so
-- a `create extension` here would succeed without anyone having chosen it.
-- Where pg_cron is not enabled, the file changes nothing and says so in a
-- NOTICE; `conversation-storage migrate` applies it again once pg_cron is
-- enabled and the job is missing.

do $outer$
begin
    if not exists (select 1 from pg_catalog.pg_extension where extname = 'pg_cron') then
        if exists (select 1 from pg_catalog.pg_available_extensions where name = 'pg_cron') then
            raise notice 'pg_cron is not enabled in this database: no cleanup job scheduled, nothing changed. '
                         'To have expired threads deleted hourly, enable it (Supabase: Dashboard > Database > '
                         'Extensions > pg_cron, or as postgres: create extension pg_cron with schema pg_catalog; '
                         'elsewhere, as a superuser: create extension pg_cron), then run conversation-storage '
                         'migrate again or apply this file again; or run conversation-storage cleanup hourly '
                         'from system cron instead';
        else
            raise notice 'pg_cron is not installed on this server: no cleanup job scheduled, nothing changed; '
                         'run conversation-storage cleanup hourly from system cron instead';
        end if;
        return;
    end if;

    perform cron.schedule(
        'cleanup-expired-threads',
        '0 * * * *',
        $job$
        do $cleanup$
        declare
            v_deleted integer;
        begin
            loop
                v_deleted := public.cleanup_expired_threads(1000);
                commit;
                exit when v_deleted < 1000;
            end loop;
        end;
        $cleanup$
        $job$
    );

    perform cron.schedule(
        'purge-cron-job-run-details',
        '30 3 * * *',
        $job$delete from cron.job_run_details where end_time < now() - interval '7 days'$job$
    );
end;
$outer$;
