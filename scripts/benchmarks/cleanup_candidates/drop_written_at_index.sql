-- The tombstones without their written_at index, for every function of the run
-- (public.cleanup_expired_threads then scans them to purge, so it is no baseline here):
--   python scripts/benchmarks/cleanup.py --rounds 1 --batch 1000 --pre-tombstones \
--     --functions scripts/benchmarks/cleanup_candidates/tombstone_writes.sql \
--     --functions scripts/benchmarks/cleanup_candidates/drop_written_at_index.sql
drop index public.conversation_thread_tombstones_written_at_idx;
