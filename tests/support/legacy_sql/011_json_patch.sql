-- Structural patches of a stored document.
--
-- Callers rewrite a whole thread on every turn, although the new text mostly
-- extends the one stored (a turn appended to "turns", "last_updated_at"
-- changed): a few KB of news resent with every byte of the history. The
-- library can send a patch instead (utils/infrastructure/json_delta.py) and
-- this function applies it to the stored JSONB. The library promises that
-- the result is exactly the JSONB a full write of the new text would have
-- stored; this function's part is to do precisely what each op says, or
-- refuse.
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

select public.conversation_storage_restrict('public.conversation_storage_apply_patch(jsonb, jsonb)'::regprocedure);
