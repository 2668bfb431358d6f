"""The Supabase CLI recipe of docs/supabase.md, run with the real CLI against the Supabase-shaped test database.

The recipe is read from docs/supabase.md and run as written in a fresh project
directory after ``supabase init``, with one change: ``supabase db push``
targets the test database with ``--db-url`` instead of a linked project. The
CLI is the npm package pinned below, installed by .ci/run (no Docker needed
for ``db push``). The migration runs as ``postgres``, which is not a
superuser, on a database with Supabase's roles; then the functions must work
for the service keys through supabase-py and the API stand-in, and refuse
the anon and authenticated roles.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from postgrest.exceptions import APIError
from supabase import create_client

from tests.support.database import PROJECT_ROOT
from tests.support.doc_blocks import fenced_block
from tests.support.environment import clean_environ
from tests.support.local_supabase import LocalSupabase
from tests.support.postgres_server import PASSWORD
from tests.test_security import CALLS
from tests.test_supabase_project import EXPECTED, _every_operation
from utils.infrastructure.backends.supabase_storage import SupabaseStorage

CLI_VERSION = "2.117.0"
#: Where .ci/run installs the CLI.
CLI = PROJECT_ROOT / ".ci-tools" / "node_modules" / ".bin" / "supabase"
INSTALL = f"npm i -E --prefix .ci-tools supabase@{CLI_VERSION}"


def _cli_dir() -> Path:
    if not CLI.exists():
        pytest.fail(f"the Supabase CLI is not installed at {CLI}: run `{INSTALL}` in the repository"
                    " (.ci/run does it; it needs node and npm)")
    return CLI.parent


def _environment(home: Path) -> dict[str, str]:
    return {
        **clean_environ(),
        # The CLI and the recipe's conversation-storage command, as a user has them on PATH.
        "PATH": os.pathsep.join([str(_cli_dir()), str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "HOME": str(home),  # the CLI keeps state under ~/.supabase
        # No calls home: the update check and telemetry only slow a machine without internet down.
        "SUPABASE_NO_UPDATE_NOTIFIER": "1",
        "SUPABASE_TELEMETRY_DISABLED": "1",
        "DO_NOT_TRACK": "1",
    }


def _db_url(project: LocalSupabase) -> str:
    return f"postgresql://postgres:{quote(PASSWORD, safe='')}@127.0.0.1:{project.server.port}/postgres?sslmode=disable"


def _run(script: str, workdir: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], check=False, cwd=workdir,
                          env=_environment(workdir / "home"), text=True, capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=300)
    assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr}"
    return done


def _docs_recipe() -> str:
    return fenced_block("docs/supabase.md", "sh", "supabase db push")


@pytest.fixture(scope="module")
def project():
    project = LocalSupabase(apply_schema=False)
    yield project
    project.close()


@pytest.fixture(scope="module")
def pushed(project, tmp_path_factory):
    """The project after the docs' recipe ran in a new CLI project directory; the directory."""
    workdir = tmp_path_factory.mktemp("cli-project")
    version = _run("supabase --version", workdir).stdout.strip()
    assert version == CLI_VERSION, f"expected the pinned CLI: {INSTALL}"
    _run("supabase init", workdir)
    _run(_docs_recipe().replace("supabase db push", f"supabase db push --db-url '{_db_url(project)}'"), workdir)
    return project, workdir


def test_the_push_records_one_migration_owned_by_postgres(pushed):
    project, workdir = pushed
    [migration] = (workdir / "supabase" / "migrations").glob("*_conversation_storage.sql")
    with project.connect() as conn:
        versions = conn.execute("select version from supabase_migrations.schema_migrations").fetchall()
        owners = conn.execute("select distinct proowner::regrole::text from pg_proc"
                              " where pronamespace = 'public'::regnamespace").fetchall()
        functions = {name for (name,) in conn.execute(
            "select proname from pg_proc where pronamespace = 'public'::regnamespace")}
        jobs = conn.execute("select jobname from cron.job order by 1").fetchall()
    assert versions == [(migration.name.split("_", 1)[0],)]
    assert owners == [("postgres",)], "applied by the project owner, not a superuser"
    assert {name for name, _ in CALLS} <= functions
    assert jobs == [("cleanup-expired-threads",), ("purge-cron-job-run-details",)]


@pytest.mark.parametrize("key_name", ["secret_key", "service_role_key"])
def test_the_service_keys_can_use_every_operation(pushed, key_name):
    project, _ = pushed
    with SupabaseStorage(project.url, getattr(project, key_name)) as storage:
        assert _every_operation(storage) == EXPECTED


@pytest.mark.parametrize("role", ["anon", "authenticated"])
def test_the_api_roles_cannot_call_any_function(pushed, role):
    project, _ = pushed
    client = create_client(project.url, project.publishable_key)
    if role == "authenticated":
        client.postgrest.auth(project.authenticated_key)
    for function, body in CALLS:
        with pytest.raises(APIError) as refused:
            client.rpc(function, body).execute()
        assert refused.value.code == "42501", (function, refused.value)
        assert refused.value.message == f"permission denied for function {function}"


def test_pushing_again_applies_nothing(pushed):
    project, workdir = pushed
    _run(f"supabase db push --db-url '{_db_url(project)}'", workdir)
    with project.connect() as conn:
        assert conn.execute("select count(*) from supabase_migrations.schema_migrations").fetchone() == (1,)
