"""Keep serving when the remote store goes away, and lose nothing acknowledged.

:class:`FailoverStorage` wraps a remote backend (Supabase or Postgres). While
the store answers, calls go straight to it. When a call finds it unreachable
(connection refused, timeout, 5xx), the circuit opens: the state becomes
``degraded``, writes and deletes are acknowledged once they are on disk in a
local :class:`Spool`, reads of spooled keys are served from the spool, and no
call waits on the dead store. A background thread probes the store with
growing pauses (the half-open state); once a probe succeeds it replays the
spool (``replaying``), then returns to ``healthy``. The spool lives in a
file, so writes spooled by a daemon that is killed are replayed by the next
one that opens it.

No acknowledged change is undone by a replay: each spooled write carries the
time it was acknowledged on the server's clock (server_clock.py), and the
store applies it only if the thread has received nothing newer, a delete or
an expiry included (sql/010's tombstones, sql/013's guards). While
replaying, a call on a key first replays that key's spooled writes, so it
sees (and a delete removes) what was acknowledged through this spool.

``update()`` needs the store: its compare-and-set cannot be decided from a
spool, so during an outage it raises :class:`StorageUnavailableError` and
writes nothing.

Erasing a user first replays the whole spool, then erases on the store: the
erase then covers every write acknowledged through this spool, and the
store's erasure record refuses older ones spooled elsewhere.

Listing, touch, per-user erase, statistics and cleanup are operator calls:
they go to the store and raise when it is down.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ..contract.errors import StorageError, StorageUnavailableError
from ..remote.remote_calls import RemoteFunctionStorage, set_if_version_call, unix_time
from ..remote.schema import REPLAY_ORDERING_SCHEMA_VERSION
from .server_clock import ServerClock
from .spool import Spool, SpooledWrite, SpoolError

logger = logging.getLogger("conversation_storage.failover")

HEALTHY, DEGRADED, REPLAYING = "healthy", "degraded", "replaying"
#: Writes claimed per round of the replay; small, so a claim never outlives its lease.
_REPLAY_BATCH = 50
#: Where the spool remembers the last measured clock offset, for a process that starts during an outage.
_OFFSET_META = "server_clock_offset"


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
        # No near cache of its own: reads and writes go through the primary's.
        super().__init__(max_value_bytes=primary.max_value_bytes, near_cache=False)
        self.primary = primary
        self.spool = spool
        self.backend_name = primary.backend_name
        self.persistent = True
        self.url = getattr(primary, "url", "")
        self.clock = ServerClock(_remembered_offset(spool))
        self._first_probe_after = first_probe_after
        self._max_probe_interval = max_probe_interval
        self._state = HEALTHY
        self._state_lock = threading.Lock()
        # One replay of a spooled write at a time in this process: the
        # recovery thread and a call replaying its key never send one twice.
        self._replay_lock = threading.Lock()
        self._last_error: str | None = None
        self._degraded_since: float | None = None
        self._recovery: threading.Thread | None = None
        # How far a replay that could not remove what it replayed got (a full disk).
        self._replayed_through = 0
        self._warned_schema = False
        self.replayed = {"applied": 0, "expired": 0, "superseded": 0, "too_old": 0}
        if unavailable is not None:
            with self._state_lock:
                self._degrade(unavailable)
            return
        try:
            self._probe()  # measures the store's clock, for the deadlines of the first writes
        except StorageUnavailableError as exc:
            with self._state_lock:
                self._degrade(exc)
            return
        if spool.pending():
            # The store answers: replay at once, and let calls replay their key
            # first rather than answer from the spool for a whole probe pause.
            with self._state_lock:
                self._state = REPLAYING
                self._degraded_since = time.monotonic()
                self._start_recovery(first_pause=0)

    # -- state ----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """``state`` (healthy / degraded / replaying), ``pending`` spooled writes, ``last_error``, replay outcomes."""
        with self._state_lock:
            state, error, since = self._state, self._last_error, self._degraded_since
        try:
            pending: int | None = self.spool.pending()
        except SpoolError as exc:
            pending, error = None, error or str(exc)
        return {
            "state": state,
            "pending": pending,
            "last_error": error,
            "degraded_for_seconds": None if since is None else round(time.monotonic() - since, 3),
            "spool": str(self.spool.path),
            "replayed": dict(self.replayed),
            "failover": "on",
            "server_clock_offset_seconds": round(self.clock.offset, 6),
        }

    def _state_now(self) -> str:
        with self._state_lock:
            return self._state

    def _degrade(self, exc: StorageError) -> None:
        """Open the circuit; the caller holds the state lock."""
        self._last_error = str(exc)
        if self._state == HEALTHY:
            self._degraded_since = time.monotonic()
            logger.warning(
                "conversation storage %s is unreachable (%s): writes go to the spool %s and are "
                "replayed when it is back", self.backend_name, exc, self.spool.path,
            )
            self._remember_offset()
        self._state = DEGRADED
        self._start_recovery(self._first_probe_after)

    def _start_recovery(self, first_pause: float) -> None:
        if self._recovery is None or not self._recovery.is_alive():
            self._recovery = threading.Thread(target=self._recover, args=(first_pause,),
                                              name="conversation-storage-recovery", daemon=True)
            self._recovery.start()

    def _remember_offset(self) -> None:
        if self.clock.measured:
            try:
                self.spool.write_meta(_OFFSET_META, repr(self.clock.offset))
            except SpoolError as exc:
                logger.debug("could not remember the server clock offset: %s", exc)

    # -- the daemon's calls ----------------------------------------------------------

    def _set(self, key, ttl_seconds, value, user_id, metadata) -> None:
        def spool_it(stamp: float) -> None:
            self.spool.append_set(key, ttl_seconds, value, user_id, metadata, stamp)

        if self._spooled_if_degraded(spool_it):
            return
        deadline = self._deadline()
        try:
            sent = time.monotonic()
            expires_at = self.primary._write(key, ttl_seconds, value, user_id, metadata, deadline)
            # The new expiry minus the lifetime: the server's time of the write.
            self.clock.observe(unix_time(expires_at) - ttl_seconds, sent, time.monotonic())
        except StorageUnavailableError as exc:
            self._spool_after(exc, deadline, spool_it)
            return
        self._supersede(key)

    def _delete(self, key: str) -> bool:
        state = self._state_now()
        if state == DEGRADED:
            return self._spool_delete(key, self.clock.now())
        deadline = self._deadline()
        try:
            if state == REPLAYING:
                self._replay_key(key)  # so that the answer counts what this process acknowledged
            deleted = self.primary._remove(key, deadline)
        except StorageUnavailableError as exc:
            return self._spool_after(exc, deadline, lambda stamp: self._spool_delete(key, stamp))
        self._supersede(key)
        return deleted

    def _spool_delete(self, key: str, stamp: float) -> bool:
        """Spool a delete; True when the spool held a live value (the store cannot be asked)."""
        was_live = self._from_spool(key) is not None
        self.spool.append_delete(key, stamp)
        return was_live

    def _get(self, key: str) -> str | None:
        return self._read(key, self.primary._get)

    def _get_versioned(self, key: str) -> tuple[str | None, int]:
        if self._state_now() == DEGRADED:
            raise StorageUnavailableError(
                f"update() needs the store to compare versions and {self.backend_name} is unreachable: "
                "nothing was written (setex and get keep working from the spool)")
        try:
            if self._state_now() == REPLAYING:
                self._replay_key(key)
            return self.primary._get_versioned(key)
        except StorageUnavailableError as exc:
            with self._state_lock:
                self._degrade(exc)
            raise

    def _read(self, key: str, from_store: Callable[[str], Any]) -> Any:
        state = self._state_now()
        if state == DEGRADED:
            return self._from_spool(key)  # the circuit is open: do not wait on a dead store
        try:
            if state == REPLAYING:
                self._replay_key(key)
            return from_store(key)
        except StorageUnavailableError as exc:
            with self._state_lock:
                self._degrade(exc)
            return self._from_spool(key)

    def _set_if_version(self, key, ttl_seconds, value, user_id, metadata, expected_version: int) -> bool:
        # Never spooled: on replay it would be applied whatever the thread
        # had become, which is what a compare-and-set exists to prevent. The
        # deadline keeps a call the store runs late from applying at all.
        deadline = self._deadline()
        try:
            if self._state_now() == REPLAYING:
                self._replay_key(key)
            self.primary._forget(key)
            written = self.primary._invoke(
                set_if_version_call(key, ttl_seconds, value, user_id, metadata, expected_version, deadline))
        except StorageUnavailableError as exc:
            with self._state_lock:
                self._degrade(exc)
            raise
        if written:
            self._supersede(key)
        return written

    def _delete_user_threads(self, user_id: str) -> int:
        self._replay_everything()
        erased = self.primary._delete_user_threads(user_id)
        with self._state_lock:
            if self._state == DEGRADED:
                # The store answered, and the spool holds nothing older than the
                # erase: reads go to the store (the probe finishes the recovery).
                self._state = REPLAYING
        return erased

    def _spooled_if_degraded(self, append: Callable[[float], None]) -> bool:
        # Only while the circuit is open. While replaying, writes go to the
        # store again: otherwise a busy daemon could spool faster than the
        # replay drains, and the replay's newer-wins rule already keeps a
        # spooled write from undoing a direct one.
        with self._state_lock:
            if self._state != DEGRADED:
                return False
            _logged(append, self.clock.now())
            return True

    def _deadline(self) -> float | None:
        """When the store should stop running this call, on its clock; None if it cannot run late.

        Not before this process has measured the store's clock: a deadline
        from a wrong clock would have the store refuse every write.
        """
        late = self.primary.late_start_seconds
        return self.clock.now() + late if late and self.clock.measured else None

    def _spool_after(self, exc: StorageUnavailableError, deadline: float | None,
                     append: Callable[[float], Any]) -> Any:
        """The store failed this call: open the circuit and spool it instead.

        If the request may still run until its deadline, the call returns only
        once that deadline has passed, and its spooled copy is stamped then:
        whether or not the request runs, the copy is newer than it, and older
        than anything acknowledged after this call (an erase or a delete by
        another daemon). The wait is within the call's timeout.
        """
        with self._state_lock:
            self._degrade(exc)
        not_before = deadline if deadline is not None and exc.may_run_later else 0.0
        wait = not_before - self.clock.now()
        if wait > 0:
            self._closed.wait(wait)  # a closing daemon does not wait: the stamp still says "no earlier"
        with self._state_lock:
            self._degrade(exc)  # again: the recovery may have closed the circuit meanwhile
            return _logged(append, max(self.clock.now(), not_before))

    def _supersede(self, key: str) -> None:
        """After a direct write, spooled writes of ``key`` are obsolete: neither read nor replayed."""
        if self._state_now() == HEALTHY:
            return
        try:
            self.spool.discard(key)
        except SpoolError as exc:
            # The store would refuse them anyway (they are older); only wasted work.
            logger.warning("%s; they are replayed and refused by the store as older", exc)

    def _from_spool(self, key: str) -> str | None:
        spooled = self.spool.latest(key)
        if spooled is None or spooled.op == "delete" or spooled.expired(self.clock.now()):
            return None
        return spooled.value

    # -- operator calls and health: straight to the store ----------------------------

    def _call(self, function: str, params: dict[str, Any]) -> Any:
        return self.primary._call(function, params)

    def _cleanup_expired(self, batch_size: int) -> int:
        return self.primary._cleanup_expired(batch_size)

    # -- recovery ---------------------------------------------------------------

    def _recover(self, first_pause: float) -> None:
        # A dead recovery thread would leave the spool unreplayed for as long as the process lives.
        while True:
            try:
                return self._recover_until_healthy(first_pause)
            except Exception:
                logger.exception("the spool's recovery failed unexpectedly; trying again in 5 s")
                if self._closed.wait(5):
                    return

    def _recover_until_healthy(self, first_pause: float) -> None:
        pause = first_pause
        while not self._closed.wait(pause * random.uniform(0.8, 1.2)):
            pause = min(max(pause, self._first_probe_after) * 2, self._max_probe_interval)
            try:
                self._probe()
            except StorageError as exc:
                with self._state_lock:
                    self._last_error = str(exc)
                continue
            with self._state_lock:
                self._state = REPLAYING
            try:
                logger.info("conversation storage %s is reachable again: replaying %d spooled writes",
                            self.backend_name, self.spool.pending())
                replayed = self._drain()
            except SpoolError as exc:
                # The store is fine, the spool file is not (a full disk):
                # calls go to the store meanwhile; try again later.
                logger.error("replaying the spool stopped: %s; retrying in %.0f s", exc, pause)
                with self._state_lock:
                    self._last_error = str(exc)
                continue
            except StorageError as exc:
                level = logging.WARNING if isinstance(exc, StorageUnavailableError) else logging.ERROR
                logger.log(level, "replaying the spool stopped (%s); the writes stay spooled", exc)
                with self._state_lock:
                    self._state, self._last_error = DEGRADED, str(exc)
                continue
            try:
                remaining = self.spool.pending()
            except SpoolError:
                remaining = -1
            with self._state_lock:
                if not self._closed.is_set() and remaining == 0:
                    outage = time.monotonic() - (self._degraded_since or time.monotonic())
                    self._state, self._degraded_since, self._last_error = HEALTHY, None, None
                    logger.info("conversation storage %s recovered after %.1f s; %d spooled writes replayed",
                                self.backend_name, outage, replayed)
                    return
            # Writes arrived meanwhile (another daemon on this spool), or
            # another live daemon holds the rest: look again shortly.
            pause = 0 if replayed else 0.5

    def _probe(self) -> None:
        """The half-open probe; its answer also measures the server's clock."""
        sent = time.monotonic()
        report = self.primary.health()
        if report.get("schema_version", REPLAY_ORDERING_SCHEMA_VERSION) < REPLAY_ORDERING_SCHEMA_VERSION \
                and not self._warned_schema:
            self._warned_schema = True
            logger.warning(
                "the database has storage schema version %s: replays are not yet ordered against every "
                "direct write and erase (sql/013); run `conversation-storage migrate`", report["schema_version"])
        server_time = report.get("server_time")
        if isinstance(server_time, str):
            self.clock.observe(unix_time(server_time), sent, time.monotonic())

    def _drain(self) -> int:
        try:
            return self._drain_claimed()
        except SpoolError:
            self._replay_without_claims()
            raise

    def _replay_without_claims(self) -> None:
        """Replay every spooled write without claiming it (claims cannot be written: a full disk).

        Each replayed write is removed if the file lets it; one that stays is
        replayed once more when the disk has room again, and the store then
        answers that it is already there.
        """
        while not self._closed.is_set() and (writes := self.spool.after(self._replayed_through, _REPLAY_BATCH)):
            for write in writes:
                with self._replay_lock:
                    self._count(self.primary.replay(write))
                try:
                    self.spool.remove(write)
                except SpoolError:
                    pass
                self._replayed_through = write.id

    def _replay_everything(self) -> None:
        """Replay every spooled write now, claimed by another daemon or not (a second replay is harmless)."""
        last = 0
        while writes := self.spool.after(last, _REPLAY_BATCH):
            for write in writes:
                with self._replay_lock:
                    self._replay(write)
                last = write.id

    def _drain_claimed(self) -> int:
        replayed = 0
        while not self._closed.is_set() and (batch := self.spool.claim(_REPLAY_BATCH)):
            for write in batch:
                with self._replay_lock:
                    # Gone if a direct write made it obsolete, or a call on its key replayed it.
                    if self.spool.holds(write.id):
                        self._replay(write)
                        replayed += 1
        return replayed

    def _replay_key(self, key: str) -> None:
        """Replay ``key``'s newest spooled write, claimed by another daemon or not: the call must see it.

        The older ones are obsolete then (spool.py) and go with it.
        """
        with self._replay_lock:
            try:
                write = self.spool.latest(key)
            except SpoolError as exc:
                logger.warning("could not read the spool before calling the store: %s", exc)
                return
            # A write set aside as too old leaves older ones, as old: on to the next.
            while write is not None and self._replay(write) == "too_old":
                write = self.spool.latest(key)

    def _count(self, outcome: str) -> str:
        self.replayed[outcome] = self.replayed.get(outcome, 0) + 1
        return outcome

    def _replay(self, write: SpooledWrite) -> str:
        outcome = self._count(self.primary.replay(write))
        if outcome == "too_old":
            logger.error(
                "a spooled %s of %r acknowledged at %s is older than the store's tombstone retention and "
                "cannot be ordered against later writes: not replayed, kept in table set_aside_writes of %s",
                write.op, write.key, datetime.fromtimestamp(write.written_at).isoformat(), self.spool.path,
            )
            self.spool.set_aside(write, "older than the store's tombstone retention")
        else:
            self.spool.remove(write)
        return outcome

    def wait_until_healthy(self, timeout: float) -> bool:
        """For tests and shutdown hooks: wait for the spool to be replayed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._state_now() == HEALTHY:
                return True
            time.sleep(0.05)
        return self._state_now() == HEALTHY

    def _close(self) -> None:
        recovery = self._recovery
        if recovery is not None:
            recovery.join(timeout=10)
        try:
            pending = self.spool.pending()
        except SpoolError:
            pending = -1
        if pending:
            logger.warning("closing with %s writes still spooled in %s: they are replayed by the next "
                           "process that opens this spool", "some" if pending < 0 else pending, self.spool.path)
        self._remember_offset()
        self.spool.close()
        self.primary.close()


def _remembered_offset(spool: Spool) -> float:
    try:
        return float(spool.read_meta(_OFFSET_META) or 0.0)
    except (SpoolError, ValueError):
        return 0.0


def _logged(append: Callable[[float], Any], stamp: float) -> Any:
    try:
        return append(stamp)
    except SpoolError as exc:
        logger.error("a write could not be saved anywhere: the store is unreachable and %s", exc)
        raise
