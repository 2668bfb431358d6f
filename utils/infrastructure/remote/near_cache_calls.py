"""Reads and writes through the near cache (near_cache.py): what to send, what to keep.

A read tells thread_fetch the version it holds (and, for a document this
process wrote, the MD5 of PostgreSQL's printing of it); a write of a held
thread sends json_delta's patch to thread_patch. Both transports and both
faces share these, so only the I/O differs between them.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from ..contract.errors import StorageSchemaError, StorageValueError
from . import json_delta, jsonb_text
from .function_calls import Call, _document_or_none, _unchanged, patch_call
from .near_cache import Held, NearCache

logger = logging.getLogger("conversation_storage")


class PlannedRead(NamedTuple):
    """A read through the near cache: what to tell the store this process holds."""

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
        return cls(text, Call("thread_fetch", params, _unchanged))

    def remember(self, cache: NearCache, key: str, answer: dict | None) -> str | None:
        """The document thread_fetch answered, from the cache when it said "unchanged"."""
        if answer is None:
            cache.forget(key)
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
        cache.put(key, text, version, printed=True)
        return text


class PlannedWrite(NamedTuple):
    """A write through the near cache: the patch against the held version, if one pays."""

    held: Held | None
    patch: str | None

    @classmethod
    def of(cls, cache: NearCache, key: str, value: str) -> PlannedWrite:
        if len(value) < cache.patch_min_chars:
            return cls(None, None)
        held = cache.get(key)
        if held is None:
            return cls(None, None)
        return cls(held, json_delta.diff(held.text, value))

    def patch_call(self, key, ttl_seconds, value, user_id, metadata, deadline) -> Call:
        assert self.held is not None and self.patch is not None
        return patch_call(key, self.held.version, self.patch, len(value.encode("utf-8")), ttl_seconds,
                          user_id, metadata, deadline)


def patch_refused(key: str, exc: StorageValueError) -> None:
    # The patch came from json_delta and the store could not apply it: a
    # bug, not the caller's fault. The whole document is written instead.
    logger.warning("the store refused the patch for %s (%s); writing the whole thread", key, exc)


def remember_written(cache: NearCache, key: str, value: str, answer: dict) -> Any:
    """Hold what thread_put / thread_patch wrote; return the new expiry as the store answered it."""
    cache.put(key, value, int(answer["version"]), printed=False)
    return answer["expires_at"]


def near_cache_of(option: bool | NearCache | None) -> NearCache | None:
    if isinstance(option, NearCache):
        return option
    return NearCache() if option else None
