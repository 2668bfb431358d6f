"""Patches of a rewritten thread: json_delta.diff's, applied by sql/011, give exactly a full write's JSONB."""

from __future__ import annotations

import copy
import itertools
import json
from collections import Counter

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.database import apply_sql
from tests.support.documents import conversation_document, next_turn
from utils.infrastructure.remote.json_delta import Number, diff, loads

APPLY = "select public.conversation_storage_apply_patch(%s::jsonb, %s::jsonb)::text"
#: Patches of any size, so that small generated documents get one too.
ANY_SIZE = {"max_share": 1000.0}


@pytest.fixture(scope="module")
def conn(postgres_server):
    name = postgres_server.create_database("json_delta")
    with postgres_server.connect(name) as conn:
        apply_sql(conn)
        yield conn


def stored(conn, text: str) -> str:
    """What a full write of ``text`` stores, as JSONB prints it."""
    return conn.execute("select %s::jsonb::text", (text,)).fetchone()[0]


def patched(conn, old_text: str, patch: str) -> str:
    return conn.execute(APPLY, (old_text, patch)).fetchone()[0]


def assert_exact(conn, old_text: str, new_text: str, **options) -> list:
    patch = diff(old_text, new_text, **options)
    assert patch is not None
    assert patched(conn, old_text, patch) == stored(conn, new_text)
    return json.loads(patch)


# --- explicit cases ------------------------------------------------------------------------

PAD = '"pad":"' + "x" * 400 + '"'


def test_numbers_equal_only_numbers_of_the_same_spelling():
    one = loads("1")
    assert one == Number("1") and one != Number("1.0")
    for other in (1, 1.0, "1", True):
        # not (a == b) checks __eq__ itself, which a != b would not reach.
        assert one != other and other != one and not (one == other) and not (other == one)  # noqa: SIM201
    assert loads('[1, 1.0, 1e2, -0, true]')[4] is True


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('{"a":1,%s}', '{"a":1.0,%s}'),
        ('{"a":1.0,%s}', '{"a":1.00,%s}'),
        ('{"a":100,%s}', '{"a":1e2,%s}'),
        ('{"a":0.1,%s}', '{"a":0.10000000000000001,%s}'),
        ('{"a":0,%s}', '{"a":-0,%s}'),
        ('{"a":[1,2],%s}', '{"a":[1,2.0],%s}'),
    ],
)
def test_a_number_spelled_differently_is_a_change(conn, old, new):
    old, new = old % PAD, new % PAD
    ops = assert_exact(conn, old, new)
    assert ops and all(op["path"][0] == "a" for op in ops)


@pytest.mark.parametrize(
    ("before", "after"),
    [("true", "1"), ("1", "true"), ("false", "0"), ('"1"', "1"), ("1", '"1"'), ("null", "0"),
     ('"true"', "true")],
)
def test_a_value_of_another_type_is_a_change_however_it_compares_in_python(conn, before, after):
    ops = assert_exact(conn, f'{{"a":{before},{PAD}}}', f'{{"a":{after},{PAD}}}')
    [op] = ops
    assert (op["op"], op["path"]) == ("set", ["a"])
    # True == 1 in Python: compare the types too.
    assert (type(op["value"]), op["value"]) == (type(json.loads(after)), json.loads(after))


def test_numbers_are_written_into_the_patch_as_spelled(conn):
    new = '{"a":[1.50,1E+2,-0,123456789012345678901234567890.000],%s}' % PAD
    ops = assert_exact(conn, '{"a":[],%s}' % PAD, new)
    assert '"values":[1.50,1E+2,-0,123456789012345678901234567890.000]' in diff('{"a":[],%s}' % PAD, new)
    assert ops[0]["op"] == "append"


def test_unchanged_text_spelled_otherwise_needs_no_op(conn):
    old = '{ "b" : "caf\\u00e9 \\/ x", "a" : [1, {"c": null}], %s }' % PAD
    new = '{"a":[1,{"c":null}],"b":"café / x",%s}' % PAD
    assert diff(old, new) == "[]"
    assert patched(conn, old, "[]") == stored(conn, new)


def test_a_repeated_key_counts_once_its_last_value(conn):
    # json.loads and JSONB both keep the last of repeated keys.
    assert diff('{"a":1,"a":2,%s}' % PAD, '{"a":2,%s}' % PAD) == "[]"
    assert_exact(conn, '{"a":2,%s}' % PAD, '{"a":2,"a":3,%s}' % PAD)
    assert_exact(conn, '{"a":1,"a":2,%s}' % PAD, '{"a":1,%s}' % PAD)


def test_keys_removed_and_added(conn):
    ops = assert_exact(conn, '{"a":1,"b":{"c":2},%s}' % PAD, '{"b":{"d":[]},"e":"x",%s}' % PAD)
    assert {op["op"] for op in ops} == {"set", "remove"}


def test_arrays_grow_by_append_and_otherwise_are_rewritten(conn):
    ops = assert_exact(conn, '{"a":[1,[2]],%s}' % PAD, '{"a":[1,[2],[3],4],%s}' % PAD)
    assert ops == [{"op": "append", "path": ["a"], "values": [[3], 4]}]
    ops = assert_exact(conn, '{"a":[1,2,3],%s}' % PAD, '{"a":[1,2],%s}' % PAD)
    assert ops == [{"op": "set", "path": ["a"], "value": [1, 2]}]
    assert_exact(conn, '[%s,[1,{"x":1}]]' % PAD[6:], '[%s,[1,{"x":2}],3]' % PAD[6:])


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('{"a":"\\u0000",%s}', '{"a":"b",%s}'),
        ('{"a":"b",%s}', '{"a":"\\u0000",%s}'),
        ('{"a":"b",%s}', '{"$conversation-storage:json-text":"%s"}'),
        ('{"$conversation-storage:json-text":"%s"}', '{"a":"b",%s}'),
    ],
)
def test_documents_stored_in_an_envelope_get_no_patch(old, new):
    assert diff(old % PAD, new % PAD) is None


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("1", "2"),
        ('"a"', '"b"'),
        ("null", "{}"),
        ('{"a":1}', "[1]"),
        ("[1]", '{"a":1}'),
        ("[1,2,3]", "[1,2]"),  # a shorter root array: only a full write replaces the root
        ("[" * 3000 + "]" * 3000, "[" * 3000 + "1" + "]" * 3000),  # too deep to walk
        ('{"a":1}', '{"a":NaN}'),  # not JSON: never raises
        ('{"a":1}', "{"),
    ],
)
def test_what_a_patch_cannot_address_gets_none(old, new):
    assert diff(old, new, **ANY_SIZE) is None


def test_a_patch_that_does_not_pay_gets_none():
    assert diff('{"a":1}', '{"a":2}') is None  # the op is larger than half the document
    assert diff('{"a":1}', '{"a":2}', **ANY_SIZE) == '[{"op":"set","path":["a"],"value":2}]'


@pytest.mark.parametrize(("turns", "share"), [(10, 0.10), (50, 0.05)])
def test_a_pal_thread_appending_a_turn_sends_a_small_patch(conn, turns, share):
    old = conversation_document(turns)
    new = next_turn(old)
    ops = assert_exact(conn, old, new)
    assert [op["op"] for op in ops] == ["set", "append"]
    assert len(diff(old, new).encode()) < share * len(new.encode())  # one turn of turns + 1


def test_a_patch_can_follow_a_patch(conn):
    texts = [conversation_document(4)]
    for _ in range(3):
        texts.append(next_turn(texts[-1]))
    document = texts[0]
    for before, after in itertools.pairwise(texts):
        document = patched(conn, document, diff(before, after))
    assert document == stored(conn, texts[-1])


# --- the SQL function refuses what it cannot apply exactly ---------------------------------

DOC = '{"a": {"b": [1, {"c": 2}]}, "s": "x", "n": 1}'


@pytest.mark.parametrize(
    "patch",
    [
        '{"op":"set","path":["a"],"value":1}',  # not an array
        '[1]',
        '[{"path":["a"],"value":1}]',
        '[{"op":"move","path":["a"],"from":["n"]}]',
        '[{"op":"SET","path":["a"],"value":1}]',
        '[{"op":"set","path":["a"]}]',
        '[{"op":"set","path":["a"],"value":1,"test":true}]',
        '[{"op":"set","path":"a","value":1}]',
        '[{"op":"set","path":[0],"value":1}]',
        '[{"op":"set","path":[],"value":1}]',
        '[{"op":"set","path":["x","y"],"value":1}]',
        '[{"op":"set","path":["a","b","2"],"value":1}]',
        '[{"op":"set","path":["a","b","-1"],"value":1}]',
        '[{"op":"set","path":["a","b","01"],"value":1}]',
        '[{"op":"set","path":["a","b","x"],"value":1}]',
        '[{"op":"set","path":["s","x"],"value":1}]',
        '[{"op":"set","path":["a","b","0","c"],"value":1}]',
        '[{"op":"append","path":["a"],"values":[1]}]',
        '[{"op":"append","path":[],"values":[1]}]',
        '[{"op":"append","path":["a","b"],"values":1}]',
        '[{"op":"append","path":["a","b"]}]',
        '[{"op":"append","path":["a","x"],"values":[1]}]',
        '[{"op":"remove","path":["x"]}]',
        '[{"op":"remove","path":["a","b","0"]}]',
        '[{"op":"remove","path":[]}]',
        '[{"op":"remove","path":["n"]},{"op":"set","path":["n","x"],"value":1}]',
    ],
)
def test_the_function_refuses_what_it_cannot_apply_exactly(conn, patch):
    with pytest.raises(psycopg.errors.InvalidParameterValue) as raised:
        patched(conn, DOC, patch)
    assert raised.value.sqlstate == "22023"


def test_the_function_refuses_nulls(conn):
    for args in [(None, "[]"), (DOC, None)]:
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            conn.execute(APPLY, args)


def test_the_function_applies_each_op(conn):
    patch = json.dumps([
        {"op": "set", "path": ["a", "b", "1", "c"], "value": [3]},
        {"op": "set", "path": ["a", "b", "0"], "value": {"z": None}},
        {"op": "set", "path": ["new"], "value": "v"},
        {"op": "append", "path": ["a", "b"], "values": [[4], 5]},
        {"op": "append", "path": ["a", "b", "1", "c"], "values": []},
        {"op": "remove", "path": ["s"]},
    ])
    expected = '{"a": {"b": [{"z": null}, {"c": [3]}, [4], 5]}, "n": 1, "new": "v"}'
    assert patched(conn, DOC, patch) == stored(conn, expected)
    assert patched(conn, "[1]", '[{"op":"append","path":[],"values":[[2],{"x":3}]}]') == '[1, [2], {"x": 3}]'


def test_only_service_role_may_execute_the_function(conn):
    function = "public.conversation_storage_apply_patch(jsonb, jsonb)"
    public = conn.execute(
        "select exists (select 1 from pg_proc p,"
        " aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a"
        " where p.oid = %s::regprocedure and a.grantee = 0 and a.privilege_type = 'EXECUTE')",
        (function,),
    ).fetchone()[0]
    assert public is False
    roles = dict(conn.execute(
        "select rolname, has_function_privilege(rolname, %s, 'EXECUTE') from pg_roles"
        " where rolname in ('anon', 'authenticated', 'service_role')", (function,),
    ).fetchall())
    assert roles == {name: name == "service_role" for name in roles}
    conn.execute("drop role if exists json_delta_nobody")
    conn.execute("create role json_delta_nobody")
    try:
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute("set local role json_delta_nobody")
            conn.execute(APPLY, (DOC, "[]"))
    finally:
        conn.execute("drop role json_delta_nobody")


# --- property: whenever diff answers a patch, the server ends with a full write's JSONB ----

# A document is built as a tree of nodes and written out as raw text, so the
# same value can be spelled in many ways and keys can repeat:
#   ["num", token] ["str", value, style] ["lit", "true"|"false"|"null"]
#   ["arr", [node, ...]] ["obj", [[key, key_style, node], ...]]

SPELLINGS = [
    ["0", "-0", "0.0", "0e0", "-0.0"],
    ["1", "1.0", "1.00", "1e0", "10e-1", "0.1e1"],
    ["100", "1e2", "1E2", "1e+2", "100.0", "1.00e2"],
    ["0.1", "0.10", "1e-1", "0.10000000000000001"],
    ["-2.5", "-2.50", "-25e-1"],
    ["123456789012345678901234567890", "1.23456789012345678901234567890e29"],
]
TOKENS = [token for family in SPELLINGS for token in family]
TOKENS += ["3.141592653589793", "-7", "1e-5", "9007199254740993"]

TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=6)
# Now and then the one character JSONB cannot hold: diff must answer None then.
TEXT_MAYBE_NUL = st.one_of(TEXT, st.sampled_from(["a\x00"] + [""] * 19))
STYLES = st.sampled_from(["plain", "ascii", "escape_all", "slashes"])


def write_string(value: str, style: str) -> str:
    if style == "ascii":
        return json.dumps(value, ensure_ascii=True)
    if style == "escape_all":
        units = value.encode("utf-16-be")
        return '"' + "".join(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2)) + '"'
    text = json.dumps(value, ensure_ascii=False)
    return text.replace("/", "\\/") if style == "slashes" else text


def write(node, space: str) -> str:
    kind = node[0]
    if kind == "num":
        return node[1]
    if kind == "str":
        return write_string(node[1], node[2])
    if kind == "lit":
        return node[1]
    if kind == "arr":
        return "[" + ("," + space).join(write(child, space) for child in node[1]) + "]"
    return "{" + ("," + space).join(
        write_string(key, style) + ":" + space + write(child, space) for key, style, child in node[1]
    ) + "}"


def scalars():
    return st.one_of(
        st.sampled_from(TOKENS).map(lambda t: ["num", t]),
        st.integers(-(10**40), 10**40).map(lambda i: ["num", str(i)]),
        st.tuples(TEXT_MAYBE_NUL, STYLES).map(lambda t: ["str", t[0], t[1]]),
        st.sampled_from(["true", "false", "null"]).map(lambda t: ["lit", t]),
    )


KEYS = st.sampled_from(["a", "b", "c", "turns", "é", "a/b", "1", ""])


def nodes(max_leaves: int = 12):
    return st.recursive(
        scalars(),
        lambda children: st.one_of(
            st.lists(children, max_size=4).map(lambda items: ["arr", items]),
            st.lists(st.tuples(KEYS, STYLES, children).map(list), max_size=4)
            .map(lambda items: ["obj", items]),
        ),
        max_leaves=max_leaves,
    )


ROOTS = st.one_of(
    st.lists(st.tuples(KEYS, STYLES, nodes()).map(list), min_size=1, max_size=5)
    .map(lambda items: ["obj", items]),
    st.lists(nodes(), min_size=1, max_size=5).map(lambda items: ["arr", items]),
)


def containers(node, found=None):
    found = [] if found is None else found
    if node[0] == "arr":
        found.append(node)
        for child in node[1]:
            containers(child, found)
    elif node[0] == "obj":
        found.append(node)
        for _, _, child in node[1]:
            containers(child, found)
    return found


def other_spellings(token: str) -> list[str]:
    if "e" in token.lower():
        return [token, token.replace("e", "E")]
    if "." in token:
        return [token, token + "0"]
    return [token, token + ".0", token + "e0"]


def respell(node, draw) -> None:
    """Every number of ``node`` spelled another way, of the same value where a family knows one."""
    for item in containers(node):
        children = item[1] if item[0] == "arr" else [entry[2] for entry in item[1]]
        for child in children:
            if child[0] == "num":
                family = next((f for f in SPELLINGS if child[1] in f), None) or other_spellings(child[1])
                child[1] = draw(st.sampled_from(family))


def mutate(root, draw) -> None:
    """One random change somewhere in the tree ``root`` (in place)."""
    target = draw(st.sampled_from(containers(root)))
    items = target[1]
    if target[0] == "arr":
        action = draw(st.sampled_from(["append", "append", "replace", "pop", "insert", "respell"]))
        if action == "append" or not items:
            items.extend(draw(st.lists(nodes(6), min_size=1, max_size=3)))
        elif action == "replace":
            items[draw(st.integers(0, len(items) - 1))] = draw(nodes(6))
        elif action == "pop":
            items.pop()
        elif action == "insert":
            items.insert(0, draw(nodes(4)))
        else:
            respell(target, draw)
    else:
        action = draw(st.sampled_from(["add", "change", "remove", "repeat", "respell", "retype"]))
        if action == "add" or not items:
            items.append([draw(KEYS), draw(STYLES), draw(nodes(6))])
        elif action == "change":
            items[draw(st.integers(0, len(items) - 1))][2] = draw(nodes(6))
        elif action == "remove":
            key = items[draw(st.integers(0, len(items) - 1))][0]
            items[:] = [entry for entry in items if entry[0] != key]
        elif action == "repeat":  # the key again, later in the text: its new value wins
            items.append([draw(st.sampled_from([entry[0] for entry in items])), draw(STYLES), draw(nodes(4))])
        elif action == "respell":
            respell(target, draw)
        else:  # the same key, a value of another type: 1 -> "1" -> true -> ...
            entry = items[draw(st.integers(0, len(items) - 1))]
            entry[2] = draw(st.sampled_from([
                ["num", "1"], ["str", "1", "plain"], ["lit", "true"], ["lit", "null"],
                ["arr", [["num", "1"]]], ["obj", [["1", "plain", ["num", "1"]]]],
            ]))


def test_a_patch_always_gives_the_full_write_jsonb(conn):
    outcomes: Counter[str] = Counter()

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.data(), root=ROOTS, spaces=st.sampled_from(["", " ", "\n  "]))
    def check(data, root, spaces):
        old_text = write(root, spaces)
        new_root = copy.deepcopy(root)
        for _ in range(data.draw(st.integers(1, 4))):
            mutate(new_root, data.draw)
        new_text = write(new_root, data.draw(st.sampled_from(["", " "])))
        old, new = json.loads(old_text), json.loads(new_text)  # the generator writes valid JSON
        patch = diff(old_text, new_text, **ANY_SIZE)
        if patch is None:
            # Only what a patch cannot address: a NUL, another root, a shorter root array.
            outcomes["full write"] += 1
            assert ("\\u0000" in old_text + new_text or type(old) is not type(new)
                    or (type(new) is list and len(new) < len(old))), (old_text, new_text)
            return
        outcomes["patch"] += 1
        # With the default share diff says no more often, or (its budget
        # cutting a recursion short) sets a larger value whole.
        for each in {patch, diff(old_text, new_text)} - {None}:
            result, expected = conn.execute(APPLY + ", %s::jsonb::text", (old_text, each, new_text)).fetchone()
            assert result == expected, (old_text, new_text, each)

    check()
    # Most generated pairs must be patched, or the property says little.
    assert outcomes["patch"] > 2 * outcomes["full write"], outcomes
