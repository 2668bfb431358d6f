-- Hourly cleanup with pg_cron: job 'cleanup-expired-threads' at minute 0 of
-- every hour (GMT) deletes expired threads in batches of 1000 until the
-- backlog is gone, committing after each batch so locks stay short.
-- Re-running this file updates the jobs instead of adding copies. Where
-- pg_cron is not available it changes nothing and says so: then schedule
-- scripts/cleanup_expired_threads.py with system cron instead.
-- A second job keeps cron.job_run_details (never purged by pg_cron itself)
-- to the last 7 days.

do $outer$
begin
    if not exists (select 1 from pg_catalog.pg_extension where extname = 'pg_cron') then
        if exists (select 1 from pg_catalog.pg_available_extensions where name = 'pg_cron') then
            begin
                create extension pg_cron;
            exception when others then
                raise notice 'pg_cron is installed on this server but cannot be enabled here (%); '
                             'no cleanup job scheduled: enable pg_cron (Supabase: Database > Extensions) '
                             'and apply this file again, or run scripts/cleanup_expired_threads.py from cron',
                             sqlerrm;
                return;
            end;
        else
            raise notice 'pg_cron is not available on this server: no cleanup job scheduled; '
                         'run scripts/cleanup_expired_threads.py hourly from system cron instead';
            return;
        end if;
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
