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
