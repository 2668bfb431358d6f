"""Reads through the near cache, and every write: the calls to send, then what to keep of the answer.

A read tells thread_fetch the version it holds (and, for a document this
process wrote, the MD5 of PostgreSQL's printing of it); a write of a held
thread sends json_delta's patch to thread_patch, and without a near cache
a write is thread_put, planned here too. A transport, sync or async, only
makes the calls between the plan and the remembering.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from ..contract.errors import StorageSchemaError, StorageValueError
from . import json_delta, jsonb_text
from .function_calls import Call, _document_or_none, _unchanged, patch_call, set_call
from .near_cache import NearCache

logger = logging.getLogger("conversation_storage")


class PlannedRead(NamedTuple):
    """A read through the near cache: what to tell the store this process holds, and what to keep."""

    cache: NearCache
    key: str
    #: What the read returns if the store answers "unchanged".
    text: str | None
    call: Call

    @classmethod
    def of(cls, cache: NearCache, key: str) -> PlannedRead:
        held = cache.get(key)
        params: dict[str, Any] = {"p_thread_id": key, "p_known_version": 0}
        text = None
        if held is not None:
            text = held.text if held.printed else jsonb_text.render(held.text)
            if text is not None:
                params["p_known_version"] = held.version
                if not held.printed:
                    # Held as this process wrote it: the store confirms the printing once.
                    params["p_known_md5"] = jsonb_text.fingerprint(text)
        return cls(cache, key, text, Call("thread_fetch", params, _unchanged))

    def remember(self, answer: dict | None) -> str | None:
        """The document thread_fetch answered, from the cache when it said "unchanged"."""
        cache = self.cache
        if answer is None:
            cache.forget(self.key)
            return None
        version = int(answer["version"])
        if "data" in answer:
            text = _document_or_none(answer["data"])
        elif self.text is not None and version == self.call.params["p_known_version"]:
            text = self.text
        else:
            raise StorageSchemaError(
                f"thread_fetch answered 'unchanged' at version {version}, which this process does not hold: "
                "the database has an unexpected thread_fetch(); apply the files of sql/ again"
            )
        assert text is not None, "thread_fetch answers data as the text of a not-null column"
        cache.put(self.key, text, version, printed=True)
        return text


class PlannedWrite(NamedTuple):
    """A write: the patch to send first when one pays, the whole write otherwise, and what to keep.

    The caller sends :attr:`patch` if there is one; when it was not applied
    (None: the thread moved on, or the store refused it) it sends
    :meth:`whole`. It hands the answer that wrote to :meth:`remember`, and
    calls :meth:`forget` when a call failed: whether it was written is unknown.
    """

    #: None when the store runs without a near cache: then every write is whole.
    cache: NearCache | None
    key: str
    ttl_seconds: int
    value: str
    user_id: str | None
    metadata: dict | None
    #: Refused by the server if it starts after this (unix time), if given.
    deadline: float | None
    #: thread_patch against the held version, when a patch pays.
    patch: Call | None

    @classmethod
    def of(cls, cache: NearCache | None, key: str, ttl_seconds: int, value: str, user_id: str | None,
           metadata: dict | None, deadline: float | None = None) -> PlannedWrite:
        patch = None
        if cache is not None and len(value) >= cache.patch_min_chars:
            held = cache.get(key)
            if held is not None:
                delta = json_delta.diff(held.text, value)
                if delta is not None:
                    patch = patch_call(key, held.version, delta, len(value.encode("utf-8")), ttl_seconds,
                                       user_id, metadata, deadline)
        return cls(cache, key, ttl_seconds, value, user_id, metadata, deadline, patch)

    def whole(self) -> Call:
        """thread_put of the whole document (built only when needed: it scans the text)."""
        return set_call(self.key, self.ttl_seconds, self.value, self.user_id, self.metadata, self.deadline)

    def patch_refused(self, exc: StorageValueError) -> None:
        """The patch came from json_delta and the store could not apply it: a bug, not the caller's fault."""
        logger.warning("the store refused the patch for %s (%s); writing the whole thread", self.key, exc)

    def remember(self, answer: dict) -> Any:
        """Hold what thread_put / thread_patch wrote; return the new expiry as the store answered it."""
        if self.cache is not None:
            self.cache.put(self.key, self.value, int(answer["version"]), printed=False)
        return answer["expires_at"]

    def forget(self) -> None:
        """A call failed: whether it wrote is unknown, so nothing of the thread is held."""
        if self.cache is not None:
            self.cache.forget(self.key)


def near_cache_of(option: bool | NearCache | None, *, local: bool = False) -> NearCache | None:
    """The cache a store runs with: one given, a new one (``True``), none (``False``).

    ``None``, the default, is a new one unless the server is ``local``: on
    this machine the cache costs more than the bytes it saves (near_cache.py).
    """
    if isinstance(option, NearCache):
        return option
    if option is None:
        option = not local
    return NearCache() if option else None
