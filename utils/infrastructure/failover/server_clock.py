"""This process's estimate of the store's clock.

The store orders writes on its own clock: a direct write is stamped with the
server's ``now()``. A write spooled during an outage is replayed later with
the time it was acknowledged, and the replay keeps it only if nothing newer
reached the thread (sql/010). For that comparison to mean anything the spool
must stamp its writes on the same clock, so it uses this estimate rather than
the daemon's own clock: then a daemon whose clock is minutes off still orders
its spooled writes correctly against other daemons' direct writes.

Every answer that carries the server's time is a measurement: the server read
its clock after the request left and before the answer arrived, so the
offset is the server's time minus the midpoint, right within half the round
trip. The tightest recent measurement is kept.

The offset is kept against this machine's monotonic clock, which no one
sets: a wall clock stepped by NTP or by hand after a measurement changes
neither the stamps of spooled writes nor the deadlines sent to the store.
The wall clock is read only to report the offset and to carry it over to
the next process (monotonic time does not survive a restart).
"""

from __future__ import annotations

import threading
import time

#: A measurement older than this is replaced by the next one, however loose (clocks drift).
_FRESH_SECONDS = 60.0


class ServerClock:
    def __init__(self, wall_offset: float = 0.0) -> None:
        """``wall_offset``: the server's clock minus this machine's wall clock, as last known."""
        self._lock = threading.Lock()
        self._offset = time.time() + wall_offset - time.monotonic()
        self._uncertainty: float | None = None  # None: never measured (offset assumed or inherited)
        self._measured_at = 0.0

    def observe(self, server_time: float, sent: float, received: float) -> None:
        """Record that the server's clock read ``server_time`` between ``sent`` and ``received`` (monotonic)."""
        uncertainty = max(received - sent, 0.0) / 2
        with self._lock:
            stale = received - self._measured_at > _FRESH_SECONDS
            if self._uncertainty is None or stale or uncertainty <= self._uncertainty:
                self._offset = server_time - (sent + received) / 2
                self._uncertainty = uncertainty
                self._measured_at = received

    def now(self) -> float:
        """The server's current time as a Unix timestamp, as well as this process can tell."""
        return time.monotonic() + self._offset

    @property
    def offset(self) -> float:
        """Seconds to add to this machine's wall clock to read the server's."""
        return self.now() - time.time()

    @property
    def measured(self) -> bool:
        return self._uncertainty is not None

    @property
    def uncertainty(self) -> float | None:
        return self._uncertainty
