"""A test run killed by a timeout's SIGTERM leaves no server behind.

The run is real: pytest in a process of its own, on a test that starts a
PostgreSQL server and a pgbouncer in front of it and then waits to be killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.database import PROJECT_ROOT
from tests.support.environment import clean_environ
from tests.support.waiting import wait_until

STALLED_TEST = '''
import os, time
from pathlib import Path
from tests.support.pgbouncer import PgBouncer
from tests.support.postgres_server import PostgresServer

def test_stalls():
    server = PostgresServer().start()
    bouncer = PgBouncer(server).start()
    Path(os.environ["STARTED"]).write_text(f"{server.datadir}\\n{bouncer._process.pid}")
    time.sleep(600)
'''


def _processes_using(datadir: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if datadir.encode() in argv:
            found.append(int(cmdline.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_run_killed_with_sigterm_stops_its_servers(tmp_path):
    (tmp_path / "test_stalled.py").write_text(STALLED_TEST)
    started = tmp_path / "started"
    env = clean_environ({"STARTED": str(started), "PYTHONPATH": str(PROJECT_ROOT)})
    run = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
                            str(tmp_path / "test_stalled.py")], cwd=tmp_path, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    datadir = bouncer = None
    try:
        def servers_started() -> bool:
            assert run.poll() is None, run.stdout.read().decode(errors="replace")
            return started.exists() and bool(started.read_text())

        wait_until(servers_started, "the stalled test to start its servers", timeout=90, interval=0.1)
        datadir, pid = started.read_text().split("\n")
        bouncer = int(pid)
        assert _processes_using(datadir), "the server runs"
        assert _alive(bouncer)
        run.send_signal(signal.SIGTERM)
        run.wait(timeout=60)
        assert run.returncode == -signal.SIGTERM, "the run still dies of the signal"
        assert _processes_using(datadir) == [], "no postgres process is left on the killed run's data directory"
        assert not _alive(bouncer), "nor its pgbouncer"
    finally:
        if run.poll() is None:
            run.kill()
        # Whatever the outcome, take down what a failing run left, not in the next test's way.
        for pid in ([*_processes_using(datadir)] if datadir else []) + ([bouncer] if bouncer else []):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
