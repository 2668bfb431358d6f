-- Cheap threads over a slow link: the near cache's calls.
--
-- The library keeps, per process, the last version of the threads it read
-- or wrote (its near cache) and:
--
--   thread_fetch(key, known_version)  answers {"version": v} alone when the
--       live thread is still at the version the caller holds, the document
--       only when it changed;
--   thread_put(...)                   stores a thread, answering the new version;
--   thread_patch(key, base_version, patch, ...)  applies a structural patch
--       to the live thread, only while it is still at base_version
--       (compare-and-set), else answers NULL and the caller writes in full.
--
-- A cached document is only ever returned after the server confirmed its
-- version in the same round trip, so the cache saves bytes, never a check.
-- That needs a version that names one document for good, whoever changed it
-- (an operator's UPDATE in Supabase's editor too) and after a restored
-- backup: versions are random numbers from the server's strong random source
-- (gen_random_uuid: a restore or setseed() cannot replay it), drawn from
-- [2^62, 2^62 + 2^61). New rows draw theirs in the column default
-- (sql/versioned/001_tables.sql), which thread_put also uses for the rows it
-- updates. The trigger below draws a new one for every other UPDATE that
-- writes the document or the version: where the version it would leave is
-- below 2^62 (the sequence that thread_patch and thread_replay still name,
-- or an operator's number), is the old one + 1, or is the old one while the
-- document changed (an outside edit). Versions are only ever compared for
-- equality: nothing orders them. The expression is written out twice rather
-- than called as a function: a function with its own search_path cannot be
-- inlined, and its call costs more than the rest of the trigger.

create or replace function public.conversation_storage_next_version()
returns trigger
language plpgsql
volatile
security invoker
set search_path = ''
as $$
begin
    new.version := (pg_catalog.uuid_hash_extended(pg_catalog.gen_random_uuid(), 0) & 2305843009213693951)
                   + 4611686018427387904;
    return new;
end;
$$;

-- UPDATE OF: a statement that writes neither column (accessed_at, expiry,
-- metadata) never calls the trigger; the documents are only compared when
-- the version stays as it was.
drop trigger if exists conversation_threads_version on public.conversation_threads;
create trigger conversation_threads_version
    before update of version, conversation_data on public.conversation_threads
    for each row
    when (new.version < 4611686018427387904
          or new.version = old.version + 1
          or (new.version = old.version and new.conversation_data is distinct from old.conversation_data))
    execute function public.conversation_storage_next_version();

-- Structural patches of a stored document.
--
-- Callers rewrite a whole thread on every turn, although the new text mostly
-- extends the one stored. The library can send a patch instead
-- (utils/infrastructure/json_delta.py) and this function applies it to the
-- stored JSONB. The library promises that the result is exactly the JSONB a
-- full write of the new text would have stored; this function's part is to
-- do precisely what each op says, or refuse.
--
-- A patch is a JSON array of ops, applied in order:
--   {"op": "set",    "path": [..], "value": V}        put V at path; the parent exists
--   {"op": "append", "path": [..], "values": [V, ..]} extend the array at path ([] = the root)
--   {"op": "remove", "path": [..]}                    drop an existing object key
-- A path holds object keys and array indexes, all JSON strings.
--
-- Strict on purpose: jsonb_set, -> and #- forgive a lot (a missing parent
-- is ignored, an index out of range prepends or appends, "-1" counts from
-- the end, an object || an array wraps the object). Any of those means the
-- patch was made against another document than the one stored, so applying
-- it would store something nobody wrote. Every such case, an op it does not
-- know, or a member it does not expect raises SQLSTATE 22023, and the
-- client falls back to a full write.
--
-- Paths are walked one level per step, checking each; the library refuses
-- documents nested deeper than 1024 levels (orjson's limit when it validates
-- them), so a walk stays short.
create or replace function public.conversation_storage_apply_patch(p_doc jsonb, p_patch jsonb)
returns jsonb
language plpgsql
immutable
security invoker
set search_path = ''
as $$
declare
    v_doc    jsonb := p_doc;
    v_op     jsonb;
    v_number bigint;
    v_kind   text;
    v_path   text[];
    v_depth  integer;
    v_walk   integer;
    v_node   jsonb;
    v_key    text;
    v_bad    text;
begin
    if p_doc is null or p_patch is null then
        raise exception 'a patch and the document to patch are both needed' using errcode = '22023';
    end if;
    if pg_catalog.jsonb_typeof(p_patch) <> 'array' then
        raise exception 'a patch is a JSON array of ops, got a JSON %', pg_catalog.jsonb_typeof(p_patch)
            using errcode = '22023';
    end if;

    for v_op, v_number in
        select e.op, e.n from pg_catalog.jsonb_array_elements(p_patch) with ordinality as e(op, n)
    loop
        if pg_catalog.jsonb_typeof(v_op) <> 'object'
           or pg_catalog.jsonb_typeof(v_op -> 'op') is distinct from 'string' then
            raise exception 'patch op %: not an object with a text member "op": %', v_number, v_op
                using errcode = '22023';
        end if;
        v_kind := v_op ->> 'op';
        if v_kind not in ('set', 'append', 'remove') then
            raise exception 'patch op %: unknown op %', v_number, pg_catalog.quote_literal(v_kind)
                using errcode = '22023';
        end if;
        -- A member this function does not read could change what the op means.
        select k into v_bad
          from pg_catalog.jsonb_object_keys(v_op) as k
         where k <> all (case v_kind when 'set' then array['op', 'path', 'value']
                                     when 'append' then array['op', 'path', 'values']
                                     else array['op', 'path'] end)
         limit 1;
        if v_bad is not null then
            raise exception 'patch op % (%): unexpected member %', v_number, v_kind, pg_catalog.quote_literal(v_bad)
                using errcode = '22023';
        end if;
        if pg_catalog.jsonb_typeof(v_op -> 'path') is distinct from 'array'
           or exists (select 1 from pg_catalog.jsonb_array_elements(v_op -> 'path') as p
                       where pg_catalog.jsonb_typeof(p) <> 'string') then
            raise exception 'patch op % (%): "path" must be an array of strings', v_number, v_kind
                using errcode = '22023';
        end if;
        v_path := array(select pg_catalog.jsonb_array_elements_text(v_op -> 'path'));
        v_depth := pg_catalog.cardinality(v_path);
        if v_kind = 'set' and not v_op ? 'value' then
            raise exception 'patch op % (set): no "value"', v_number using errcode = '22023';
        end if;
        if v_kind = 'append' and pg_catalog.jsonb_typeof(v_op -> 'values') is distinct from 'array' then
            raise exception 'patch op % (append): "values" must be an array', v_number using errcode = '22023';
        end if;
        if v_kind <> 'append' and v_depth = 0 then
            -- Replacing the root is a full write, which the client sends as one.
            raise exception 'patch op % (%): the path is empty', v_number, v_kind using errcode = '22023';
        end if;

        -- Walk to the parent (set, remove) or to the array itself (append),
        -- checking that each step exists.
        v_node := v_doc;
        v_walk := case when v_kind = 'append' then v_depth else v_depth - 1 end;
        for i in 1 .. v_walk loop
            v_key := v_path[i];
            case pg_catalog.jsonb_typeof(v_node)
                when 'object' then
                    if not v_node ? v_key then
                        raise exception 'patch op % (%): path % does not exist (no key % at level %)',
                            v_number, v_kind, v_op -> 'path', pg_catalog.quote_literal(v_key), i
                            using errcode = '22023';
                    end if;
                    v_node := v_node -> v_key;
                when 'array' then
                    if v_key !~ '^(0|[1-9][0-9]{0,8})$'
                       or v_key::integer >= pg_catalog.jsonb_array_length(v_node) then
                        raise exception 'patch op % (%): path % does not exist (no index % at level %)',
                            v_number, v_kind, v_op -> 'path', pg_catalog.quote_literal(v_key), i
                            using errcode = '22023';
                    end if;
                    v_node := v_node -> v_key::integer;
                else
                    raise exception 'patch op % (%): path % does not exist (a % at level %)',
                        v_number, v_kind, v_op -> 'path', pg_catalog.jsonb_typeof(v_node), i
                        using errcode = '22023';
            end case;
        end loop;

        if v_kind = 'append' then
            if pg_catalog.jsonb_typeof(v_node) <> 'array' then
                raise exception 'patch op % (append): % is a %, not an array',
                    v_number, v_op -> 'path', pg_catalog.jsonb_typeof(v_node) using errcode = '22023';
            end if;
            -- array || array concatenates; "values" was checked to be one.
            if v_depth = 0 then
                v_doc := v_doc || (v_op -> 'values');
            else
                v_doc := pg_catalog.jsonb_set(v_doc, v_path, v_node || (v_op -> 'values'), false);
            end if;
            continue;
        end if;

        v_key := v_path[v_depth];
        if v_kind = 'remove' then
            if pg_catalog.jsonb_typeof(v_node) <> 'object' or not v_node ? v_key then
                raise exception 'patch op % (remove): path % is not an existing object key',
                    v_number, v_op -> 'path' using errcode = '22023';
            end if;
            v_doc := v_doc #- v_path;
            continue;
        end if;

        -- set: a new or existing key of an object, an existing element of an array.
        case pg_catalog.jsonb_typeof(v_node)
            when 'object' then
                null;
            when 'array' then
                if v_key !~ '^(0|[1-9][0-9]{0,8})$'
                   or v_key::integer >= pg_catalog.jsonb_array_length(v_node) then
                    raise exception 'patch op % (set): path % does not exist (no index %)',
                        v_number, v_op -> 'path', pg_catalog.quote_literal(v_key) using errcode = '22023';
                end if;
            else
                raise exception 'patch op % (set): the parent of % is a %, not an object or array',
                    v_number, v_op -> 'path', pg_catalog.jsonb_typeof(v_node) using errcode = '22023';
        end case;
        v_doc := pg_catalog.jsonb_set(v_doc, v_path, v_op -> 'value', true);
    end loop;

    return v_doc;
end;
$$;

-- The live thread: NULL when there is none; {"version": v} when it is still
-- at p_known_version; else {"version": v, "data": <JSON text>}.
-- p_known_md5, when given, is the md5 of the text the caller would return:
-- "unchanged" then also needs it to match PostgreSQL's printing of the
-- document (a caller that wrote the thread computes that text itself;
-- jsonb_text.py). Without it the document is not even read.
-- accessed_at as thread_get keeps it.
create or replace function public.thread_fetch(
    p_thread_id     text,
    p_known_version bigint default 0,
    p_known_md5     text   default null
)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
    v_version     bigint;
    v_accessed_at timestamptz;
    v_data        jsonb;
begin
    select t.version, t.accessed_at,
           case when t.version = p_known_version and p_known_md5 is null then null else t.conversation_data end
      into v_version, v_accessed_at, v_data
      from public.conversation_threads t
     where t.thread_id = p_thread_id
       and t.expires_at > now();

    if not found then
        return null;
    end if;

    if v_accessed_at < now() - interval '1 minute' then
        update public.conversation_threads t
           set accessed_at = now()
         where t.thread_id = p_thread_id
           and t.accessed_at < now() - interval '1 minute';
    end if;

    if v_version = p_known_version
       and (p_known_md5 is null or pg_catalog.md5(v_data::text) = p_known_md5) then
        return pg_catalog.jsonb_build_object('version', v_version);
    end if;
    return pg_catalog.jsonb_build_object('version', v_version, 'data', v_data::text);
end;
$$;

-- Store (insert or replace) a thread and answer {"version", "expires_at"}.
-- p_data is JSON text, cast here so clients can send the caller's text as-is;
-- size_bytes is its UTF-8 length as written. Replacing a live thread keeps
-- its created_at, and keeps its user_id / metadata unless new ones are given
-- (pal's add_turn rewrites a thread without them); replacing an expired one
-- starts a new thread. p_deadline: refused (57014) if it starts later.
create or replace function public.thread_put(
    p_thread_id   text,
    p_data        text,
    p_ttl_seconds integer,
    p_user_id     text        default null,
    p_metadata    jsonb       default null,
    p_deadline    timestamptz default null
)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
    v_version    bigint;
    v_expires_at timestamptz;
begin
    -- conversation_storage_check_deadline (010), inline: on every set of a
    -- small thread, a nested call with its own search_path costs more than
    -- the check itself.
    if p_deadline is not null and now() > p_deadline then
        raise exception 'the write arrived after its deadline (%), when the caller had stopped waiting; not run',
            p_deadline using errcode = '57014';
    end if;
    if p_ttl_seconds is null or p_ttl_seconds <= 0 then
        raise exception 'ttl_seconds must be a positive integer, got %', p_ttl_seconds
            using errcode = '22023';
    end if;
    if p_metadata is not null and pg_catalog.jsonb_typeof(p_metadata) <> 'object' then
        raise exception 'metadata must be a JSON object' using errcode = '22023';
    end if;

    insert into public.conversation_threads as t
        (thread_id, user_id, conversation_data, size_bytes, expires_at, metadata)
    values
        (p_thread_id, p_user_id, p_data::jsonb, pg_catalog.octet_length(p_data),
         now() + make_interval(secs => p_ttl_seconds), coalesce(p_metadata, '{}'::jsonb))
    on conflict (thread_id) do update set
        conversation_data = excluded.conversation_data,
        size_bytes        = excluded.size_bytes,
        expires_at        = excluded.expires_at,
        accessed_at       = now(),
        updated_at        = now(),
        version           = excluded.version,  -- the column default drew it for the proposed row
        created_at  = case when t.expires_at > now() then t.created_at else now() end,
        user_id     = case when t.expires_at > now()
                           then coalesce(p_user_id, t.user_id) else p_user_id end,
        metadata    = case when t.expires_at > now()
                           then coalesce(p_metadata, t.metadata) else excluded.metadata end
    returning t.version, t.expires_at into v_version, v_expires_at;

    return pg_catalog.jsonb_build_object('version', v_version, 'expires_at', v_expires_at);
end;
$$;

-- Rewrite the live thread at p_base_version by applying p_patch to it: the
-- same row thread_put would leave (created_at kept, user_id and metadata
-- unless new ones are given), without sending the unchanged part. NULL when
-- the thread is gone, expired or at another version: the caller then writes
-- the whole document. p_size_bytes is the new document's size as its caller
-- wrote it, what thread_put records from p_data.
create or replace function public.thread_patch(
    p_thread_id    text,
    p_base_version bigint,
    p_patch        text,
    p_size_bytes   integer,
    p_ttl_seconds  integer,
    p_user_id      text        default null,
    p_metadata     jsonb       default null,
    p_deadline     timestamptz default null
)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
    v_version    bigint;
    v_expires_at timestamptz;
begin
    -- Patches carry threads of 16 KiB and more: the nested call's cost does not show.
    perform public.conversation_storage_check_deadline(p_deadline);
    if p_ttl_seconds is null or p_ttl_seconds <= 0 then
        raise exception 'ttl_seconds must be a positive integer, got %', p_ttl_seconds
            using errcode = '22023';
    end if;
    if p_metadata is not null and pg_catalog.jsonb_typeof(p_metadata) <> 'object' then
        raise exception 'metadata must be a JSON object' using errcode = '22023';
    end if;
    if p_size_bytes is null or p_size_bytes < 0 then
        raise exception 'size_bytes must be a non-negative integer, got %', p_size_bytes
            using errcode = '22023';
    end if;

    update public.conversation_threads t set
        conversation_data = public.conversation_storage_apply_patch(t.conversation_data, p_patch::jsonb),
        size_bytes  = p_size_bytes,
        expires_at  = now() + make_interval(secs => p_ttl_seconds),
        accessed_at = now(),
        updated_at  = now(),
        version     = pg_catalog.nextval('public.conversation_thread_versions'),
        user_id     = coalesce(p_user_id, t.user_id),
        metadata    = coalesce(p_metadata, t.metadata)
     where t.thread_id = p_thread_id
       and t.version = p_base_version
       and t.expires_at > now()
    returning t.version, t.expires_at into v_version, v_expires_at;

    if not found then
        return null;
    end if;
    return pg_catalog.jsonb_build_object('version', v_version, 'expires_at', v_expires_at);
end;
$$;

select public.conversation_storage_restrict(f)
  from unnest(array[
      'public.conversation_storage_next_version()',
      'public.conversation_storage_apply_patch(jsonb, jsonb)',
      'public.thread_fetch(text, bigint, text)',
      'public.thread_put(text, text, integer, text, jsonb, timestamptz)',
      'public.thread_patch(text, bigint, text, integer, integer, text, jsonb, timestamptz)'
  ]::regprocedure[]) as f;
