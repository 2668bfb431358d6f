#!/usr/bin/env python3
"""Delete expired conversation threads until none are left, for system cron.

Works with the sqlite, postgres and supabase backends (from the environment
or .env). Prints the number deleted and the time taken (one JSON line with
--json), with a progress line when run on a terminal.
Exit codes: 0 done, 1 storage error, 2 configuration error.

    # crontab: every hour at minute 5
    5 * * * * cd /srv/daemon && /srv/daemon/.venv/bin/python scripts/cleanup_expired_threads.py --json >> /var/log/thread-cleanup.log 2>&1
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.infrastructure.operations.cli import main

if __name__ == "__main__":
    sys.exit(main([arg for arg in sys.argv[1:] if arg == "--json"] + ["cleanup"]
                  + [arg for arg in sys.argv[1:] if arg != "--json"]))
