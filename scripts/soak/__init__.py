"""The failover soak, in parts: the daemons, the store and its outages, the check of the history.

``scripts/failover_soak.py`` is the entry point; see its docstring.
"""

from __future__ import annotations

#: Lifetimes of the sets: long ones, and short ones that expire during the run.
LONG_TTL = 3600
SHORT_TTLS = (2, 6)
#: Server and daemons share this machine's clock, but a write is stamped somewhere inside its call.
MARGIN = 2.0
#: What a read of a key without a live thread is recorded as.
ABSENT = "absent"
#: The failover layer's states, as ``status()["state"]`` gives them.
HEALTHY, DEGRADED, REPLAYING = "healthy", "degraded", "replaying"
