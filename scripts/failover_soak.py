#!/usr/bin/env python3
"""Soak the failover layer: daemons working through outages and kills, every read and key checked.

N daemon processes call the public API (``get_storage()``, set up by
environment variables) on keys they share: reads, sets that live long or
expire in a few seconds, deletes, updates (``update()`` appends the op to a
log in the document), and, on the keys each of three users owns, sets that
name the user and erases of the user (``delete_user_threads``). Meanwhile the
store is killed (``pg_ctl -m immediate``) and restarted, and daemons are
killed with SIGKILL and replaced by a new process on the same spool; daemon
slot 0 runs as PID 1 of a PID namespace of its own, as in a container. With
``--backend supabase`` the daemons go through the RPC gateway of
tests/support, which stays up while Postgres behind it is down.

Every op is logged, in one order per key across processes, with its outcome
and the failover layer's state before and after (soak/daemon.py). Each read
is then checked against that history where it happened (soak/checker.py),
and at the end, once one last process per spool has replayed what is left,
every key must hold a state the history allows, read straight from Postgres
(with its owner) and through ``get()``. Replays are counted from the
server's log of completed statements.

    python scripts/failover_soak.py --daemons 3 --seconds 120 --outages 5 --kills 5 [--shared-spool]

Prints a table, every failing read or key with its history, and one JSON
line; exits 1 if a read or a key was stale, lost, resurrected or corrupt, a
thread has the wrong owner, a spool was not fully replayed, a daemon crashed,
or the container slot's daemon was not PID 1.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.soak.checker import FINAL_FAILURES, READ_FAILURES
from scripts.soak.daemon import daemon, final
from scripts.soak.driver import Run, container_works
from scripts.soak.report import describe, table


def options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--daemons", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--outages", type=int, default=5)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--backend", choices=("postgres", "supabase"), default="postgres")
    parser.add_argument("--shared-spool", action="store_true", help="one spool file for every daemon")
    parser.add_argument("--container-slot", action=argparse.BooleanOptionalAction, default=True,
                        help="run daemon slot 0 as PID 1 of its own PID namespace (needs root; default: on)")
    parser.add_argument("--keys", type=int,
                        help="keys per epoch, and keys kept all along (default: 2 per daemon)")
    parser.add_argument("--epoch", type=float, default=3.0,
                        help="seconds before the daemons move to new keys")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the run directory (logs, spools)")
    opts = parser.parse_args()
    opts.keys = opts.keys or 2 * opts.daemons
    opts.seed = random.randrange(2**31) if opts.seed is None else opts.seed
    return opts


def main() -> int:
    if sys.argv[1:2] == ["daemon"]:
        daemon(json.loads(sys.argv[2]))
        return 0
    if sys.argv[1:2] == ["final"]:
        final(timeout=90)
        return 0
    opts = options()
    if opts.container_slot and (why := container_works()) is not None:
        print(f"cannot run a daemon as PID 1 of its own namespace ({why}); use --no-container-slot",
              file=sys.stderr)
        return 2
    # Terminated like interrupted: through the cleanup, so no server outlives the run.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    began = time.time()
    run = Run(opts)
    try:
        figures, failures = run.soak()
    except KeyboardInterrupt:
        print("interrupted: everything it started is stopped", file=sys.stderr)
        return 130
    finally:
        run.close()
    figures["wall_seconds"] = round(time.time() - began, 1)
    print(table(figures))
    print("\ntimeline:\n  " + "\n  ".join(run.events))
    if failures:
        print(f"\n{len(failures)} failures (times from the start, as in the timeline):")
        for failure in failures:
            print(describe(failure, run.t0))
    print(json.dumps(figures))
    bad = sum(figures[name] for name in (*READ_FAILURES, *FINAL_FAILURES, "unreplayed", "crashes",
                                         "container_not_pid1"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
