"""scripts/failover_soak.py, briefly: through outages and kills, every read and key follows the history."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.database import PROJECT_ROOT
from tests.support.environment import clean_environ

SCRIPT = PROJECT_ROOT / "scripts" / "failover_soak.py"
SHORT = ["--daemons", "2", "--seconds", "20"]
RUNS = {
    "postgres, a spool per daemon": [*SHORT, "--outages", "2", "--kills", "2"],
    "postgres, one shared spool": [*SHORT, "--outages", "2", "--kills", "2", "--shared-spool"],
    # One outage: the daemons' probes back off, and a replay must happen within the run.
    "supabase, one shared spool": [*SHORT, "--outages", "1", "--kills", "1", "--shared-spool",
                                   "--backend", "supabase"],
}
READ_FAILURES = ("stale_reads", "resurrected_reads", "corrupt_reads")
FINAL_FAILURES = ("lost", "stale", "resurrected", "corrupt", "wrong_owner")


@pytest.fixture(scope="module")
def soaks():
    """All runs at once: each has its own servers and files, and together they take the time of one."""
    environ = clean_environ()
    runs = {name: subprocess.Popen([sys.executable, str(SCRIPT), *args], cwd=PROJECT_ROOT, env=environ,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for name, args in RUNS.items()}
    yield runs
    for process in runs.values():
        if process.poll() is None:
            process.terminate()  # the soak stops what it started
            process.communicate(timeout=60)


@pytest.mark.parametrize("name", RUNS)
def test_soak_keeps_every_read_and_every_last_acknowledged_state(soaks, name):
    out, err = soaks[name].communicate(timeout=240)
    assert out.strip(), err
    figures = json.loads(out.strip().splitlines()[-1])
    # What the run went through, so that it cannot pass by doing nothing.
    expected_outages, expected_kills = (1, 1) if "supabase" in name else (2, 2)
    assert (figures["outages"], figures["kills"]) == (expected_outages, expected_kills)
    assert figures["acked_deletes"] > 0 and figures["expired_sets"] > 0
    assert figures["acked_updates"] > 0 and figures["acked_user_sets"] > 0 and figures["acked_erases"] > 0
    assert figures["reads_checked_healthy"] > 0 and figures["reads_degraded"] > 0
    assert figures["spooled_writes"] > 0 and figures["replay_calls"] > 0
    # Every run restarts the daemon that runs as PID 1 of its own namespace, on the same spool.
    assert figures["container_restarts"] >= 1 and figures["container_not_pid1"] == 0, out
    assert figures["crashes"] == figures["unreplayed"] == 0, out
    assert [figures[kind] for kind in READ_FAILURES] == [0, 0, 0], out
    assert [figures[kind] for kind in FINAL_FAILURES] == [0, 0, 0, 0, 0], out
    assert soaks[name].returncode == 0, out + err
