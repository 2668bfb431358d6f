-- Conversation threads: one JSON document per thread key, with an expiry.
-- Idempotent: safe to apply again on a database that already has it.

create table if not exists public.conversation_threads (
    id                uuid        primary key default gen_random_uuid(),
    thread_id         text        not null unique,
    user_id           text,
    conversation_data jsonb       not null,
    created_at        timestamptz not null default now(),
    accessed_at       timestamptz not null default now(),
    expires_at        timestamptz not null,
    metadata          jsonb       not null default '{}'::jsonb,
    -- Mirrors the client-side key rule so that no transport can store a key
    -- that another transport would refuse to read back.
    constraint conversation_threads_thread_id_size
        check (octet_length(thread_id) between 1 and 512),
    constraint conversation_threads_metadata_is_object
        check (jsonb_typeof(metadata) = 'object')
);

comment on table public.conversation_threads is
    'AI conversation threads keyed by thread_id (e.g. thread:{uuid}); rows past expires_at are invisible and removed by public.cleanup_expired_threads().';

-- The UNIQUE constraint already indexes thread_id; these two serve the
-- cleanup scan and per-user lookups.
create index if not exists conversation_threads_expires_at_idx
    on public.conversation_threads (expires_at);
create index if not exists conversation_threads_user_id_idx
    on public.conversation_threads (user_id) where user_id is not null;

-- RLS on with no policy: anon and authenticated see nothing, only roles that
-- bypass RLS (Supabase's service_role, the table owner) reach the rows.
alter table public.conversation_threads enable row level security;
