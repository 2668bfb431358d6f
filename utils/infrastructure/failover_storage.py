"""Keep serving when the remote store goes away, and lose nothing acknowledged.

:class:`FailoverStorage` wraps a remote backend (Supabase or Postgres). While
the store answers, calls go straight to it. When a call finds it unreachable
(connection refused, timeout, 5xx), the circuit opens: the state becomes
``degraded``, writes and deletes are acknowledged once they are on disk in a
local :class:`Spool`, reads of spooled keys are served from the spool, and no
call waits on the dead store. A background thread probes the store with
growing pauses (the half-open state); once a probe succeeds it replays the
spool in order (``replaying``) through SQL that never overwrites a value
written after the spooled one, then returns to ``healthy``. The spool lives
in a file, so writes spooled by a daemon that is killed are replayed by the
next one that opens it.

Listing, touch, per-user erase, statistics and cleanup are operator calls:
they go to the store and raise when it is down.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from datetime import datetime, timezone
from typing import Any

from .errors import StorageError, StorageUnavailableError
from .remote_calls import RemoteFunctionStorage
from .spool import Spool

logger = logging.getLogger("conversation_storage.failover")

HEALTHY, DEGRADED, REPLAYING = "healthy", "degraded", "replaying"
#: Version reported by reads during an outage: the next write is spooled unconditionally.
_SPOOLED_VERSION = -1


class FailoverStorage(RemoteFunctionStorage):
    def __init__(
        self,
        primary: RemoteFunctionStorage,
        spool: Spool,
        *,
        first_probe_after: float = 1.0,
        max_probe_interval: float = 30.0,
        unavailable: StorageUnavailableError | None = None,
    ) -> None:
        super().__init__(max_value_bytes=primary.max_value_bytes)
        self.primary = primary
        self.spool = spool
        self.backend_name = primary.backend_name
        self.persistent = True
        self.url = getattr(primary, "url", "")
        self._first_probe_after = first_probe_after
        self._max_probe_interval = max_probe_interval
        self._state = HEALTHY
        self._state_lock = threading.Lock()
        self._last_error: str | None = None
        self._degraded_since: float | None = None
        self._recovery: threading.Thread | None = None
        pending = spool.pending()
        if unavailable is not None or pending:
            with self._state_lock:
                reason = unavailable or StorageUnavailableError(f"{pending} writes left in the spool")
                self._degrade(reason)

    # -- state ----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """``state`` (healthy / degraded / replaying), ``pending`` spooled writes, ``last_error``."""
        with self._state_lock:
            state, error, since = self._state, self._last_error, self._degraded_since
        return {
            "state": state,
            "pending": self.spool.pending(),
            "last_error": error,
            "degraded_for_seconds": None if since is None else round(time.monotonic() - since, 3),
            "spool": str(self.spool.path),
        }

    def _degrade(self, exc: StorageError) -> None:
        """Open the circuit; the caller holds the state lock."""
        self._last_error = str(exc)
        if self._state == HEALTHY:
            self._degraded_since = time.monotonic()
            logger.warning(
                "conversation storage %s is unreachable (%s): writes go to the spool %s and are "
                "replayed when it is back", self.backend_name, exc, self.spool.path,
            )
        self._state = DEGRADED
        if self._recovery is None or not self._recovery.is_alive():
            self._recovery = threading.Thread(target=self._recover, name="conversation-storage-recovery", daemon=True)
            self._recovery.start()

    def _healthy(self) -> bool:
        with self._state_lock:
            return self._state == HEALTHY

    # -- the daemon's calls ----------------------------------------------------------

    def _set(self, key, ttl_seconds, value, user_id, metadata) -> None:
        if self._spooled_if_degraded(lambda: self.spool.append_set(key, ttl_seconds, value, user_id, metadata)):
            return
        try:
            self.primary._set(key, ttl_seconds, value, user_id, metadata)
            self._supersede(key)
        except StorageUnavailableError as exc:
            with self._state_lock:
                self._degrade(exc)
                self.spool.append_set(key, ttl_seconds, value, user_id, metadata)

    def _delete(self, key: str) -> bool:
        with self._state_lock:
            if self._state == DEGRADED:
                return self._spool_delete(key)
        try:
            deleted = self.primary._delete(key)
            self._supersede(key)
            return deleted
        except StorageUnavailableError as exc:
            with self._state_lock:
                self._degrade(exc)
                return self._spool_delete(key)

    def _spool_delete(self, key: str) -> bool:
        """Spool a delete; True when the spool held a live value (the store cannot be asked)."""
        was_live = self._spooled_value(key) is not None
        self.spool.append_delete(key)
        return was_live

    def _get(self, key: str) -> str | None:
        return self._get_versioned(key)[0]

    def _get_versioned(self, key: str) -> tuple[str | None, int]:
        if not self._healthy():
            spooled = self.spool.latest(key)
            if spooled is not None:
                value = None if spooled.op == "delete" or spooled.expired else spooled.value
                return value, _SPOOLED_VERSION
            with self._state_lock:
                replaying = self._state == REPLAYING
            if not replaying:
                return None, _SPOOLED_VERSION  # the circuit is open: do not wait on a dead store
        try:
            return self.primary._get_versioned(key)
        except StorageUnavailableError as exc:
            with self._state_lock:
                self._degrade(exc)
            return None, _SPOOLED_VERSION

    def _set_if_version(self, key, ttl_seconds, value, user_id, metadata, expected_version: int) -> bool:
        # Compare-and-set needs the store; during an outage the write is
        # spooled as it stands and the replay's newer-wins rule orders it.
        if expected_version == _SPOOLED_VERSION:
            self._set(key, ttl_seconds, value, user_id, metadata)
            return True
        try:
            written = self.primary._set_if_version(key, ttl_seconds, value, user_id, metadata, expected_version)
            if written:
                self._supersede(key)
            return written
        except StorageUnavailableError as exc:
            with self._state_lock:
                self._degrade(exc)
                self.spool.append_set(key, ttl_seconds, value, user_id, metadata)
            return True

    def _spooled_if_degraded(self, append) -> bool:
        # Only while the circuit is open. While replaying, writes go to the
        # store again: otherwise a busy daemon could spool faster than the
        # replay drains, and the replay's newer-wins rule already keeps a
        # spooled write from undoing a direct one.
        with self._state_lock:
            if self._state != DEGRADED:
                return False
            append()
            return True

    def _supersede(self, key: str) -> None:
        """After a direct write, older spooled writes of ``key`` are obsolete: reads must not serve them."""
        with self._state_lock:
            if self._state != HEALTHY:
                self.spool.discard(key)

    def _spooled_value(self, key: str) -> str | None:
        spooled = self.spool.latest(key)
        if spooled is None or spooled.op == "delete" or spooled.expired:
            return None
        return spooled.value

    # -- operator calls and health: straight to the store ----------------------------

    def _call(self, function: str, params: dict[str, Any]) -> Any:
        return self.primary._call(function, params)

    def _cleanup_expired(self, batch_size: int) -> int:
        return self.primary._cleanup_expired(batch_size)

    # -- recovery ---------------------------------------------------------------

    def _recover(self) -> None:
        pause = self._first_probe_after
        while not self._closed.wait(pause * random.uniform(0.8, 1.2)):
            pause = min(pause * 2, self._max_probe_interval)
            try:
                self.primary.health()  # the half-open probe
            except StorageError as exc:
                with self._state_lock:
                    self._last_error = str(exc)
                continue
            with self._state_lock:
                self._state = REPLAYING
            logger.info("conversation storage %s is reachable again: replaying %d spooled writes",
                        self.backend_name, self.spool.pending())
            try:
                replayed = self._drain()
            except StorageError as exc:
                level = logging.WARNING if isinstance(exc, StorageUnavailableError) else logging.ERROR
                logger.log(level, "replaying the spool stopped (%s); the writes stay spooled", exc)
                with self._state_lock:
                    self._state, self._last_error = DEGRADED, str(exc)
                continue
            with self._state_lock:
                if not self._closed.is_set() and self.spool.pending() == 0:
                    outage = time.monotonic() - (self._degraded_since or time.monotonic())
                    self._state, self._degraded_since, self._last_error = HEALTHY, None, None
                    logger.info("conversation storage %s recovered after %.1f s; %d spooled writes replayed",
                                self.backend_name, outage, replayed)
                    return
            pause = 0  # writes arrived while replaying: drain them too

    def _drain(self) -> int:
        replayed = 0
        while not self._closed.is_set() and (batch := self.spool.oldest(100)):
            for write in batch:
                written_at = datetime.fromtimestamp(write.written_at, tz=timezone.utc)
                if write.op == "delete":
                    self.primary.replay_delete(write.key, written_at)
                elif not write.expired:
                    self.primary.replay_set(write.key, write.ttl, write.value, write.user_id, write.metadata, written_at)
                self.spool.remove(write.id)
                replayed += 1
        return replayed

    def wait_until_healthy(self, timeout: float) -> bool:
        """For tests and shutdown hooks: wait for the spool to be replayed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._healthy():
                return True
            time.sleep(0.05)
        return self._healthy()

    def _close(self) -> None:
        recovery = self._recovery
        if recovery is not None:
            recovery.join(timeout=10)
        pending = self.spool.pending()
        if pending:
            logger.warning("closing with %d writes still spooled in %s: they are replayed by the next "
                           "process that opens this spool", pending, self.spool.path)
        self.spool.close()
        self.primary.close()
