-- Functions no supported library calls, which databases built with the
-- pre-release files still have: thread_set and thread_set_before (only
-- fallbacks of libraries on a schema older than version 10, which has
-- thread_put) and the replay functions thread_replay replaced. A new
-- database never had them: nothing to do there.

drop function if exists public.thread_set(text, text, integer, text, jsonb);
drop function if exists public.thread_set_before(timestamptz, text, text, integer, text, jsonb);
drop function if exists public.thread_replay_set(text, text, integer, timestamptz, text, jsonb);
drop function if exists public.thread_replay_delete(text, timestamptz);
