"""The environment a test hands to a process it starts: this run's, without the library's own variables.

A developer's shell or CI may set CONVERSATION_STORAGE_BACKEND, SUPABASE_URL
and the like; a child process must see only what the test gives it. The names
come from the library's own list, so a variable it learns to read is removed
here too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from utils.infrastructure.operations.settings import OWN_VARIABLES

#: Every variable of the library's own namespace too (CONVERSATION_SQL_DIR, read by migrate).
OWN_PREFIX = "CONVERSATION_"


def is_own_variable(name: str) -> bool:
    return name in OWN_VARIABLES or name.startswith(OWN_PREFIX)


def clean_environ(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """``os.environ`` without the library's variables, then ``extra``."""
    return {**{k: v for k, v in os.environ.items() if not is_own_variable(k)}, **(extra or {})}


#: All of this run's environment a daemon started from its own directory gets: no PYTHONPATH, none of ours.
DAEMON_BASE = ("PATH", "HOME", "LANG", "TMPDIR")


def daemon_environ(data_home: str | os.PathLike[str], extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a daemon that imports only what it installed: :data:`DAEMON_BASE` of ``os.environ``,
    its own data directory, strict settings, then ``extra``."""
    base = {k: v for k, v in os.environ.items() if k in DAEMON_BASE}
    return {**base, "XDG_DATA_HOME": str(data_home), "CONVERSATION_STORAGE_STRICT": "true", **(extra or {})}
