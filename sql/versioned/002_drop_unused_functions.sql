-- Functions no supported library calls, which databases built with the
-- pre-release files still have: the replay functions thread_replay replaced
-- (at schema version 7, the oldest any library of 0.1.0 or later runs on).
-- A new database never had them: nothing to do there.

drop function if exists public.thread_replay_set(text, text, integer, timestamptz, text, jsonb);
drop function if exists public.thread_replay_delete(text, timestamptz);
