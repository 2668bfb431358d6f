"""What the library expects of the database schema in ``sql/``."""

from __future__ import annotations

from typing import Any

from ..contract.errors import StoragePermissionError, StorageSchemaError

#: The schema version of this library's sql/; storage_health() reports the installed one.
SCHEMA_VERSION = 12
#: The oldest installed schema this library runs on (the pre-release
#: sql/010): every operation has its function there. Later versions add the
#: near cache, which stays off below version 10 (schema_fallbacks.py), and
#: make replays safer; version 11 is today's layout (sql/versioned,
#: sql/repeatable), which dropped the functions no library of 0.1.0 or later
#: calls; version 12 records a cleanup sweep's keys in one row per step of
#: up to 1,000 rows instead of a tombstone per row.
REQUIRED_SCHEMA_VERSION = 7
#: Replays ordered against every direct write and erase (the pre-release sql/013);
#: the failover layer warns without it.
REPLAY_ORDERING_SCHEMA_VERSION = 9


def check_health(report: Any) -> dict[str, Any]:
    """Validate the report of ``storage_health()``; return it or raise with the fix."""
    if not isinstance(report, dict) or "schema_version" not in report:
        raise StorageSchemaError(
            "storage_health() returned no report: the table public.conversation_threads "
            "is missing. Apply the files of sql/ in order."
        )
    installed = report["schema_version"]
    if not isinstance(installed, int) or installed < REQUIRED_SCHEMA_VERSION:
        raise StorageSchemaError(
            f"the database has storage schema version {installed}, this library needs "
            f"{REQUIRED_SCHEMA_VERSION}: apply the newer files of sql/ in order."
        )
    if not report.get("can_access_rows"):
        raise StoragePermissionError(
            f"role {report.get('role')!r} can call the storage functions but cannot see "
            "the rows of conversation_threads (row level security): use the service-role "
            "key (Supabase) or the table owner's connection."
        )
    return report
