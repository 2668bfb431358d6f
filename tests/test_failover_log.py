"""What the failover layer tells an operator: one WARNING when the store goes away, one INFO when it is back.

The outage is real: Postgres stopped with ``-m immediate``, or Supabase's API
answering 503 (tests/support/outages.py).
"""

from __future__ import annotations

import logging
import re

from utils.infrastructure.failover.failover_storage import DEGRADED, FailoverStorage
from utils.infrastructure.failover.spool import Spool

LOGGER = "conversation_storage.failover"


def test_an_outage_logs_one_warning_and_the_recovery_one_info_line(store, tmp_path, caplog):
    spool = Spool(tmp_path / "spool.sqlite3")
    with caplog.at_level(logging.INFO, logger=LOGGER), \
            FailoverStorage(store.client(), spool, first_probe_after=0.2, max_probe_interval=1.0) as storage:
        storage.setex("thread:before", 3600, "{}")
        store.down()
        for n in range(3):
            storage.setex(f"thread:during-{n}", 3600, "{}")
        assert storage.status()["state"] == DEGRADED
        warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert re.search(rf"conversation storage {store.name}\w* is unreachable .*: writes go to the spool "
                         rf"{re.escape(str(spool.path))}", warnings[0].getMessage(), re.DOTALL), warnings[0].getMessage()

        store.up()
        assert storage.wait_until_healthy(60), storage.status()
    infos = [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.INFO]
    recovered = [m for m in infos if "recovered after" in m]
    assert len(recovered) == 1, infos
    assert re.fullmatch(rf"conversation storage {store.name}\w* recovered after \d+\.\d s; 3 spooled writes replayed",
                        recovered[0]), recovered[0]
