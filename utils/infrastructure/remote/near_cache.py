"""The last version of each thread this process read or wrote, kept to save bytes on the wire.

A remote backend sends the version it holds with every read and the store
answers "unchanged" instead of the document when it still is; a write that
extends the held document sends only the difference (json_delta.py), which
the store applies only while the thread is still at that version
(sql/repeatable/20_near_cache.sql). Nothing is ever answered from here without the
store confirming the version in the same call, so a write by another daemon
is seen by the next read, and the cache can only make calls smaller, never
staler. Versions come from one sequence on the server, so a version names
one document for good, even after the thread was deleted and written again.

Entries are bounded by count and by the size of their text; the least
recently used go first.

Saving bytes costs CPU: finding a write's change and printing a document
as PostgreSQL would (to confirm a read of this process's own write by MD5)
take about 25 ns per character here, and a full answer of thread_fetch
carries the document as a JSON string inside JSON, printed and read twice;
loopback moves a character in about 5 ns. So a store whose server runs on
this machine (:func:`local_server`) has no near cache unless one is given:
under 16 daemon threads on a loopback Postgres the cache cost a quarter to
a half of the throughput (docs/performance.md).
"""

from __future__ import annotations

import ipaddress
import threading
from collections import OrderedDict
from typing import NamedTuple

#: Threads kept at most: a daemon serves a few hundred live conversations.
DEFAULT_MAX_ENTRIES = 1024
#: Characters of document text kept at most (pal's worst thread is ~2.3 MB).
DEFAULT_MAX_CHARS = 64 * 1024 * 1024
#: Documents shorter than this are always written whole: finding the change
#: costs more than the bytes it saves (5 KB cross even a 10 Mbit/s link in 4 ms).
DEFAULT_PATCH_MIN_CHARS = 16 * 1024


class Held(NamedTuple):
    #: The store's printing of the document when ``printed``; else the
    #: caller's text of it (this process wrote it), the same JSON document.
    text: str
    version: int
    printed: bool


class NearCache:
    """A thread-safe, bounded map of key -> (document text, version)."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES, max_chars: int = DEFAULT_MAX_CHARS,
                 patch_min_chars: int = DEFAULT_PATCH_MIN_CHARS) -> None:
        if max_entries <= 0 or max_chars <= 0:
            raise ValueError("a near cache needs room for at least one entry")
        self.max_entries = max_entries
        self.max_chars = max_chars
        #: A write of a held thread sends a patch from this size on.
        self.patch_min_chars = patch_min_chars
        self._entries: OrderedDict[str, Held] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> Held | None:
        with self._lock:
            held = self._entries.get(key)
            if held is not None:
                self._entries.move_to_end(key)
            return held

    def put(self, key: str, text: str, version: int, printed: bool) -> None:
        if len(text) > self.max_chars:
            self.forget(key)
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._chars -= len(old.text)
            self._entries[key] = Held(text, version, printed)
            self._chars += len(text)
            while len(self._entries) > self.max_entries or self._chars > self.max_chars:
                _, evicted = self._entries.popitem(last=False)
                self._chars -= len(evicted.text)

    def forget(self, key: str) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._chars -= len(old.text)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._chars = 0

    def __len__(self) -> int:
        return len(self._entries)


def local_server(host: str) -> bool:
    """True when ``host`` (a name, an address or a Unix socket's directory) is this machine."""
    host = host.strip().strip("[]")
    if not host or host.startswith("/") or host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
