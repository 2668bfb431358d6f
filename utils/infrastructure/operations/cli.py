"""The ``conversation-storage`` command: inspect and operate the configured storage.

Exit codes: 0 success, 1 storage error (unreachable, refused, failed),
2 configuration or usage error, 3 the thread asked for does not exist,
4 ``doctor`` found a problem.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from typing import Any, cast

from ..contract.base_storage import ThreadStorage
from ..contract.errors import (
    StorageConfigurationError,
    StorageError,
    StoragePermissionError,
    StorageSchemaError,
    StorageUnavailableError,
)
from .backend_factory import OpenedStorage, create_storage
from .cleanup import DEFAULT_BATCH_SIZE, cleanup_until_done
from .settings import BACKENDS, Settings, load_settings

OK, STORAGE_ERROR, CONFIG_ERROR, NOT_FOUND, DOCTOR_FAILED = 0, 1, 2, 3, 4

_ENABLE_PG_CRON = ("Supabase: Dashboard > Database > Extensions > pg_cron, or as postgres `create extension "
                  "pg_cron with schema pg_catalog`; elsewhere, as a superuser, `create extension pg_cron` "
                  "with pg_cron in shared_preload_libraries")
_SYSTEM_CRON_CLEANUP = "run `conversation-storage cleanup` hourly from system cron"


class Output:
    """Human-readable lines, or JSON documents with ``--json``."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def emit(self, data: Any, text: str) -> None:
        print(json.dumps(data, default=str) if self.as_json else text)

    def error(self, message: str) -> None:
        if self.as_json:
            print(json.dumps({"error": message}))
        print(f"error: {message}", file=sys.stderr)


def open_storage(settings: Settings) -> OpenedStorage:
    """The configured backend, never the memory fallback: a command must act on the real store."""
    if settings.backend == "memory":
        raise StorageConfigurationError(
            "CONVERSATION_STORAGE_BACKEND is memory: threads live inside each daemon process, "
            "so there is nothing this command can reach. Configure sqlite, postgres or supabase."
        )
    # Strict and without failover, create_storage gives what the backend's opener made, or raises.
    return cast(OpenedStorage, create_storage(dataclasses.replace(settings, strict=True, failover=False)))


# -- commands -------------------------------------------------------------------


def cmd_get(storage: ThreadStorage, args, out: Output) -> int:
    value = storage.get(args.key)
    if value is None:
        out.error(f"{args.key} does not exist or has expired")
        return NOT_FOUND
    print(value)
    return OK


def cmd_set(storage: ThreadStorage, args, out: Output) -> int:
    value = sys.stdin.read() if args.value in (None, "-") else args.value
    metadata = json.loads(args.metadata) if args.metadata else None
    storage.set_with_ttl(args.key, args.ttl, value, user_id=args.user_id, metadata=metadata)
    out.emit({"key": args.key, "stored": True, "ttl_seconds": args.ttl}, f"stored {args.key} for {args.ttl} s")
    return OK


def cmd_delete(storage: ThreadStorage, args, out: Output) -> int:
    deleted = storage.delete(args.key)
    out.emit({"key": args.key, "deleted": deleted}, f"deleted {args.key}" if deleted else f"{args.key} did not exist")
    return OK if deleted else NOT_FOUND


def cmd_touch(storage: ThreadStorage, args, out: Output) -> int:
    touched = storage.touch(args.key, args.ttl)
    out.emit(
        {"key": args.key, "touched": touched, "ttl_seconds": args.ttl},
        f"{args.key} now expires in {args.ttl} s" if touched else f"{args.key} does not exist or has expired",
    )
    return OK if touched else NOT_FOUND


def cmd_list(storage: ThreadStorage, args, out: Output) -> int:
    threads = storage.list_threads(user_id=args.user_id, limit=args.limit)
    if out.as_json:
        print(json.dumps([t.to_json() for t in threads]))
        return OK
    if not threads:
        print("no live threads")
    for t in threads:
        print(
            f"{t.key}  user={t.user_id or '-'}  {t.size_bytes} bytes  "
            f"accessed {t.accessed_at:%Y-%m-%d %H:%M:%S}Z  expires {t.expires_at:%Y-%m-%d %H:%M:%S}Z"
        )
    return OK


def cmd_stats(storage: ThreadStorage, args, out: Output) -> int:
    stats = storage.stats()
    out.emit(
        {"backend": storage.backend_name, **stats},
        f"{storage.backend_name}: {stats['live']} live ({stats['live_bytes']} bytes), "
        f"{stats['expired']} expired awaiting cleanup, {stats['total_bytes']} bytes in all",
    )
    return OK


def cmd_cleanup(storage: ThreadStorage, args, out: Output) -> int:
    progress = _progress_line if sys.stderr.isatty() and not out.as_json else None
    result = cleanup_until_done(storage, args.batch_size, on_batch=progress)
    if progress:
        print(file=sys.stderr)
    out.emit(
        {"backend": storage.backend_name, **result.to_json()},
        f"deleted {result.deleted} expired threads in {result.seconds:.2f} s ({result.batches} batches)",
    )
    return OK


def _progress_line(deleted: int, batches: int) -> None:
    print(f"\rdeleted {deleted} expired threads ({batches} batches)", end="", file=sys.stderr, flush=True)


def cmd_migrate(args, out: Output) -> int:
    from pathlib import Path

    from .migrations import fill_unknown_sizes, migrate

    settings = load_settings()
    dsn = args.database_url or settings.database_url
    if not dsn:
        raise StorageConfigurationError("migrate needs DATABASE_URL (or SUPABASE_DB_URL, or --database-url)")
    names = migrate(dsn, directory=Path(args.sql_dir) if args.sql_dir else None, dry_run=args.dry_run)
    filled = 0 if args.dry_run else fill_unknown_sizes(dsn)
    verb = "would apply" if args.dry_run else "applied"
    text = f"{verb}: {', '.join(names)}" if names else "schema is up to date: nothing to apply"
    if filled:
        text += f"; stored the sizes of {filled} threads written before schema version 6"
    out.emit({"dry_run": args.dry_run, "files": names, "sizes_filled": filled}, text)
    return OK


def cmd_sql(args, out: Output) -> int:
    from pathlib import Path

    from .migrations import sql_files

    for sql_file in sql_files(Path(args.sql_dir) if args.sql_dir else None):
        print(f"-- ==== {sql_file.name} ====")
        print(sql_file.text.rstrip("\n"))
        print()
    return OK


# -- doctor ---------------------------------------------------------------------


def cmd_doctor(args, out: Output) -> int:
    checks: list[dict[str, str]] = []

    def check(name: str, ok: bool | None, detail: str, fix: str = "") -> None:
        status = "PASS" if ok else ("WARN" if ok is None else "FAIL")
        checks.append({"check": name, "status": status, "detail": detail, "fix": "" if ok else fix})

    _diagnose(check)
    failed = any(c["status"] == "FAIL" for c in checks)
    if out.as_json:
        print(json.dumps({"ok": not failed, "checks": checks}))
    else:
        for c in checks:
            print(f"{c['status']:<5} {c['check']}: {c['detail']}")
            if c["fix"]:
                print(f"      fix: {c['fix']}")
    return DOCTOR_FAILED if failed else OK


def _diagnose(check: Callable[..., None]) -> None:
    try:
        settings = load_settings()
    except StorageConfigurationError as exc:
        check("configuration", False, str(exc), "correct the variable named above (see .env.example)")
        return
    if settings.unknown_backend is not None:
        check("configuration", False, f"CONVERSATION_STORAGE_BACKEND={settings.unknown_backend!r} is not a known "
              "backend: daemons run on memory", f"use one of: {', '.join(BACKENDS)}")
        return
    check("configuration", True, f"backend {settings.backend}")
    if settings.backend == "supabase" and settings.supabase_key and not _diagnose_key(settings.supabase_key, check):
        return
    if settings.backend == "memory":
        check("persistence", False, "threads are kept in process memory and lost on restart",
              "set CONVERSATION_STORAGE_BACKEND to sqlite, postgres or supabase")
        return
    try:
        storage = open_storage(settings)
    except StorageConfigurationError as exc:
        check("configuration", False, str(exc), "set the variables named above (see .env.example)")
        return
    except StorageUnavailableError as exc:
        check("reachability", False, str(exc), "check the URL, the network and that the server is running")
        return
    except StoragePermissionError as exc:
        check("reachability", True, "the store answered")
        check("key role", False, str(exc), "use the service-role key (Supabase) or the table owner's login")
        return
    except StorageSchemaError as exc:
        check("reachability", True, "the store answered")
        check("schema version", False, str(exc),
              "run `conversation-storage migrate`, or apply the output of `conversation-storage sql`")
        return
    except StorageError as exc:
        check("reachability", False, str(exc), "see the message above")
        return
    with storage:
        report = storage.health()
        check("reachability", True, f"{settings.backend} at {getattr(storage, 'url', '')}")
        if "role" in report:
            check("key role", True, f"connected as {report['role']}, which can read and write the threads")
        check("schema version", True, f"version {report.get('schema_version')}")
        if "rls_enabled" in report:
            check("row level security", bool(report["rls_enabled"]),
                  "on for conversation_threads" if report["rls_enabled"] else "OFF for conversation_threads",
                  "apply sql/versioned/001_tables.sql (alter table ... enable row level security)")
            _diagnose_cleanup_job(report, check)
        else:
            check("hourly cleanup", None, f"{settings.backend} has no scheduler of its own", _SYSTEM_CRON_CLEANUP)
    _diagnose_spool(settings, check)


def _diagnose_key(key: str, check: Callable[..., None]) -> bool:
    """Check the kind of SUPABASE_KEY; False when it cannot work at all."""
    from ..backends.supabase_keys import describe_key, legacy_key_advice, require_service_key

    kind = describe_key(key)
    try:
        require_service_key(key)
    except StoragePermissionError as exc:
        check("API key", False, str(exc), "use the secret key (sb_secret_...) from Project Settings > API Keys")
        return False
    advice = legacy_key_advice(kind)
    if advice:
        check("API key", None, advice, "create a secret key under Project Settings > API Keys")
    elif kind.service_role is None:
        check("API key", None, f"SUPABASE_KEY is a {kind.name}; the server decides what it may do",
              "use the secret key (sb_secret_...) from Project Settings > API Keys")
    else:
        check("API key", True, f"a {kind.name}")
    return True


def _diagnose_cleanup_job(report: dict, check: Callable[..., None]) -> None:
    scheduled = report.get("cleanup_job_scheduled")
    if scheduled is not None:
        check("hourly cleanup", scheduled,
              "pg_cron job cleanup-expired-threads is scheduled" if scheduled
              else "pg_cron is enabled but job cleanup-expired-threads is missing",
              "run `conversation-storage migrate` again (it schedules the job wherever pg_cron is enabled), "
              "or apply sql/repeatable/90_cleanup_schedule.sql again")
    elif report.get("pg_cron_installed"):
        check("hourly cleanup", None, "pg_cron is enabled, but whether the job is scheduled cannot be read",
              "run `conversation-storage migrate` as the role that owns pg_cron's jobs (postgres on Supabase), "
              "or look at cron.job")
    else:
        check("hourly cleanup", None, "pg_cron is not enabled in this database: no job deletes expired threads",
              f"enable pg_cron ({_ENABLE_PG_CRON}), then run `conversation-storage migrate` again or apply "
              f"sql/repeatable/90_cleanup_schedule.sql again; or {_SYSTEM_CRON_CLEANUP}")


def _diagnose_spool(settings: Settings, check: Callable[..., None]) -> None:
    from .backend_factory import FAILOVER_BACKENDS, default_spool_path

    if settings.backend not in FAILOVER_BACKENDS:
        return
    if not settings.failover:
        check("failover", None, "off: while the store is down, writes fail instead of being spooled",
              "unset CONVERSATION_STORAGE_FAILOVER (on by default)")
        return
    from pathlib import Path

    from ..failover.spool import Spool, SpoolError

    path = Path(settings.spool_path) if settings.spool_path else default_spool_path(settings.backend)
    if not path.exists():
        try:
            Spool(path).close()  # where no file exists, this only checks that one could be created
        except SpoolError as exc:
            check("failover", False, f"on, but unusable: {exc}; daemons run without failover",
                  "set CONVERSATION_SPOOL_PATH to a file in a directory this user may write to")
            return
        check("failover", True, f"on; spool {path} not created yet (nothing was ever spooled)")
        return
    spool = Spool(path)
    try:
        pending = spool.pending()
    finally:
        spool.close()
    check("failover", True if pending == 0 else None,
          f"on; spool {path} holds {pending} writes not yet replayed",
          "they are replayed by the next daemon that starts with this spool and reaches the store")


# -- wiring -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conversation-storage", description="Inspect and operate the conversation thread storage."
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("doctor", help="check configuration, reachability, key role, schema, RLS and cleanup")
    p = commands.add_parser("get", help="print a thread's JSON")
    p.add_argument("key")
    p = commands.add_parser("set", help="store a thread (JSON from the argument or standard input)")
    p.add_argument("key")
    p.add_argument("ttl", type=int, help="lifetime in seconds")
    p.add_argument("value", nargs="?", help="JSON text; '-' or nothing reads standard input")
    p.add_argument("--user-id")
    p.add_argument("--metadata", help="JSON object")
    p = commands.add_parser("delete", help="delete a thread")
    p.add_argument("key")
    p = commands.add_parser("touch", help="give a live thread a new lifetime")
    p.add_argument("key")
    p.add_argument("ttl", type=int, help="new lifetime in seconds")
    p = commands.add_parser("list", help="live threads, most recently accessed first")
    p.add_argument("--user-id")
    p.add_argument("--limit", type=int, default=50)
    commands.add_parser("stats", help="live and expired counts and sizes")
    p = commands.add_parser("cleanup", help="delete expired threads until none are left")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    p = commands.add_parser("migrate", help="apply the files of sql/ that the database has not had yet")
    p.add_argument("--dry-run", action="store_true", help="print what would be applied")
    p.add_argument("--database-url", help="default: DATABASE_URL or SUPABASE_DB_URL")
    p.add_argument("--sql-dir", help="default: $CONVERSATION_SQL_DIR or the project's sql/")
    p = commands.add_parser("sql", help="print the whole schema, every file of sql/ in order, for an SQL editor")
    p.add_argument("--sql-dir", help="default: $CONVERSATION_SQL_DIR or the project's sql/")
    return parser


STORAGE_COMMANDS = {
    "get": cmd_get, "set": cmd_set, "delete": cmd_delete, "touch": cmd_touch,
    "list": cmd_list, "stats": cmd_stats, "cleanup": cmd_cleanup,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Output(args.json)
    try:
        if args.command == "doctor":
            return cmd_doctor(args, out)
        if args.command == "migrate":
            return cmd_migrate(args, out)
        if args.command == "sql":
            return cmd_sql(args, out)
        with open_storage(load_settings()) as storage:
            return STORAGE_COMMANDS[args.command](storage, args, out)
    except (StorageConfigurationError, json.JSONDecodeError) as exc:
        out.error(str(exc))
        return CONFIG_ERROR
    except (TypeError, ValueError) as exc:  # bad input: the library's StorageValueError / StorageTypeError
        out.error(str(exc))
        return CONFIG_ERROR
    except StorageError as exc:
        out.error(f"{type(exc).__name__}: {exc}")
        return STORAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
