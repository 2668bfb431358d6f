"""Structural patches between two versions of a thread's JSON text.

Callers rewrite a whole thread on every turn, although the new text mostly
extends the previous one (a turn appended to ``turns``, ``last_updated_at``
changed). :func:`diff` computes a small patch instead, which
``public.conversation_storage_apply_patch(jsonb, jsonb)`` (sql/repeatable/20_near_cache.sql) applies to
the stored JSONB. The contract is exactness: the server must end with the very
JSONB a full write of the new text would have stored, i.e.
``apply(old::jsonb, patch)::text = new::jsonb::text`` byte for byte.

Patch format, a JSON array of ops applied in order::

    {"op": "set",    "path": [..], "value": V}        put V at path (its parent exists)
    {"op": "append", "path": [..], "values": [V, ..]} extend the array at path ([] = the root)
    {"op": "remove", "path": [..]}                    drop an object key

A path holds object keys and array indexes, all written as strings.

Exactness decides what counts as unchanged. JSONB keeps a number as
``numeric``, printed as written-ish: ``1``, ``1.0`` and ``1.00`` print
differently, and ``0.1`` and ``0.10000000000000001`` are different numerics
(though the same double). So numbers are parsed into :class:`Number`, which
keeps the token's text, equals only a Number of the same text, and is
written back into the patch as that text. Strings compare by value (JSONB
stores them unescaped), objects by their keys (a repeated key: the last
wins, in ``json.loads`` as in JSONB), ``true`` is never ``1``.

Whenever a patch would not pay or might not be exact, :func:`diff` answers
None and the caller writes the whole text: values JSONB cannot hold as they
are (``to_stored`` wraps them: text that is not JSON, a NUL), roots a patch
cannot replace (a scalar, an object becoming an array), patches over half
the new text, and anything unexpected (e.g. nesting too deep to walk).
"""

from __future__ import annotations

import json

import orjson

from ..contract.json_envelope import to_stored

__all__ = ["Number", "diff", "loads"]

#: A patch larger than this share of the new text is not worth it.
MAX_SHARE = 0.5
# Bytes an op needs beyond its path and value, e.g. {"op":"append","path":[],"values":} .
_OP_OVERHEAD = 40


class Number:
    """A JSON number as its token: equal only to a Number of the same text."""

    __slots__ = ("token",)

    def __init__(self, token: str) -> None:
        self.token = token

    def __eq__(self, other: object) -> bool:
        # Not NotImplemented for other types: 1 == Number("1") must stay False
        # whichever side Python asks first.
        return type(other) is Number and other.token == self.token

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(self.token)

    def __repr__(self) -> str:
        return f"Number({self.token!r})"


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def loads(text: str) -> object:
    """Parse JSON ``text`` with every number kept as a :class:`Number`."""
    return json.loads(text, parse_int=Number, parse_float=Number, parse_constant=_no_constant)


def _fragment(value: object) -> orjson.Fragment:
    if type(value) is Number:
        return orjson.Fragment(value.token)
    raise TypeError(f"not JSON: {type(value).__name__}")


def _dumps(value: object) -> bytes:
    return orjson.dumps(value, default=_fragment)


class _TooLarge(Exception):
    """The patch outgrew what it could save: a set of some whole value may still fit."""


class _GiveUp(Exception):
    """Even the set of a whole value outgrew the budget: no patch will pay."""


class _Builder:
    """Collects ops with their values already serialized, and their sizes."""

    __slots__ = ("budget", "ops", "size")

    def __init__(self, budget: int) -> None:
        self.ops: list[tuple[str, tuple[str, ...], bytes | None]] = []
        self.size = 0
        self.budget = budget

    def add(self, kind: str, path: tuple[str, ...], value: bytes | None) -> None:
        self.ops.append((kind, path, value))
        self.size += _op_size(path, value)
        if self.size > self.budget:
            raise _TooLarge

    def truncate(self, count: int, size: int) -> None:
        del self.ops[count:]
        self.size = size


def _op_size(path: tuple[str, ...], value: bytes | None) -> int:
    # Keys that need escapes are a little longer: an estimate is enough here.
    return _OP_OVERHEAD + sum(len(key) + 3 for key in path) + (len(value) if value is not None else 0)


def diff(old_text: str, new_text: str, *, max_share: float = MAX_SHARE) -> str | None:
    """A patch turning ``old_text``'s JSONB into ``new_text``'s, or None for a full write.

    Both are values ``set`` accepts, JSON or not. Never raises: whatever cannot
    be patched exactly, or would be larger than ``max_share`` of
    ``new_text`` (tests raise it to see patches of small documents),
    answers None.
    """
    try:
        if to_stored(old_text) is not old_text or to_stored(new_text) is not new_text:
            return None  # stored as an envelope (not JSON, a NUL, or reads as one): not the JSONB a patch sees
        old = loads(old_text)
        new = loads(new_text)
        if type(old) is not type(new) or type(old) not in (dict, list):
            return None  # only a full write can replace the root
        limit = len(new_text) * max_share
        builder = _Builder(int(limit))
        # Both types are tested, though equal, so that each name is narrowed for the type checker.
        if type(old) is dict and type(new) is dict:
            _diff_object(old, new, (), builder)
        elif type(old) is list and type(new) is list and not _diff_array(old, new, (), builder):
            return None
        patch = _dumps([_op_json(kind, path, value) for kind, path, value in builder.ops])
        if len(patch) > limit:
            return None
        return patch.decode()
    except Exception:  # noqa: BLE001 - e.g. _TooLarge, RecursionError: a full write is always correct
        return None


def _op_json(kind: str, path: tuple[str, ...], value: bytes | None) -> dict:
    if kind == "remove":
        return {"op": "remove", "path": list(path)}
    assert value is not None, "a set or an append always carries its value"
    if kind == "set":
        return {"op": "set", "path": list(path), "value": orjson.Fragment(value)}
    return {"op": "append", "path": list(path), "values": orjson.Fragment(value)}


def _diff_value(old: object, new: object, path: tuple[str, ...], builder: _Builder) -> None:
    """Ops for a changed value below the root (``old != new``)."""
    kind = type(old)
    if kind is not type(new) or kind not in (dict, list):
        builder.add("set", path, _dumps(new))
        return
    count, size = len(builder.ops), builder.size
    try:
        # Both types are tested, though equal, so that each name is narrowed for the type checker.
        if type(old) is dict and type(new) is dict:
            _diff_object(old, new, path, builder)
            complete = True
        elif type(old) is list and type(new) is list:
            complete = _diff_array(old, new, path, builder)
    except _TooLarge:
        complete = False  # the parts outgrew the budget: the whole may still fit
    if complete and len(builder.ops) - count < 2:
        return  # one op for a part is never larger than the whole
    whole = _dumps(new)
    if complete and _op_size(path, whole) >= builder.size - size:
        return  # the parts are smaller
    builder.truncate(count, size)
    try:
        builder.add("set", path, whole)
    except _TooLarge:
        # Each enclosing value is larger still: stop instead of serializing them all.
        raise _GiveUp from None


def _diff_object(old: dict, new: dict, path: tuple[str, ...], builder: _Builder) -> None:
    for key in old:
        if key not in new:
            builder.add("remove", (*path, key), None)
    for key, value in new.items():
        if key not in old:
            builder.add("set", (*path, key), _dumps(value))
        else:
            before = old[key]
            if before is not value and before != value:
                _diff_value(before, value, (*path, key), builder)


def _diff_array(old: list, new: list, path: tuple[str, ...], builder: _Builder) -> bool:
    """Add ops for the elements; False when only setting the whole array will do."""
    known = len(old)
    if len(new) < known:
        return False
    for index in range(known):
        before, value = old[index], new[index]
        if before is not value and before != value:
            _diff_value(before, value, (*path, str(index)), builder)
    if len(new) > known:
        builder.add("append", path, _dumps(new[known:]))
    return True
