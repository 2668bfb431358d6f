"""The library as a daemon gets it: a wheel installed in a fresh venv, imported next to the daemon's own `utils`.

The daemon below is shaped like pal-mcp-server: a `utils` package of its own
whose `utils/storage_backend.py` is replaced by the README's re-export, and
conversation code that creates a thread and adds turns with get + setex.
Every step is a new process, so each turn survives a restart.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.database import PROJECT_ROOT
from tests.support.doc_blocks import fenced_block
from tests.support.environment import daemon_environ
from tests.support.postgres_server import PASSWORD

# The README's replacement for pal-mcp-server's utils/storage_backend.py, read from it.
PAL_STORAGE_BACKEND = fenced_block("README.md", "python", "import InMemoryStorage, get_storage_backend")

# Conversation code in pal's shape (utils/conversation_memory.py): our own, not pal's.
CONVERSATION = '''\
import json
import sys
import uuid

from utils.storage_backend import get_storage_backend

TTL_SECONDS = 3 * 3600


def create_thread(tool_name):
    thread_id = str(uuid.uuid4())
    context = {"thread_id": thread_id, "tool_name": tool_name, "turns": []}
    get_storage_backend().setex(f"thread:{thread_id}", TTL_SECONDS, json.dumps(context))
    return thread_id


def add_turn(thread_id, role, content):
    storage = get_storage_backend()
    text = storage.get(f"thread:{thread_id}")
    if text is None:
        return False
    context = json.loads(text)
    context["turns"].append({"role": role, "content": content})
    storage.setex(f"thread:{thread_id}", TTL_SECONDS, json.dumps(context))
    return True


def get_thread(thread_id):
    text = get_storage_backend().get(f"thread:{thread_id}")
    return None if text is None else json.loads(text)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "create":
        print(create_thread(*args))
    elif command == "add":
        sys.exit(0 if add_turn(*args) else 1)
    else:
        print(json.dumps(get_thread(*args)))
'''


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv with the wheel (and its postgres extra) installed, and a pal-shaped daemon folder."""
    root = tmp_path_factory.mktemp("installed")
    source = root / "source"  # a clean copy, so no stale build/ of the checkout ends up in the wheel
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PROJECT_ROOT / name, source / name)
    for name in ("sql", "utils"):
        shutil.copytree(PROJECT_ROOT / name, source / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(root / "dist"), str(source)])
    wheel = next((root / "dist").glob("conversation_storage-*.whl"))
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    _run([str(venv / "bin" / "pip"), "install", "-q", f"{wheel}[postgres]"])
    daemon = root / "daemon"
    (daemon / "utils").mkdir(parents=True)
    (daemon / "utils" / "__init__.py").write_text('"""The daemon\'s own utils package."""\n')
    (daemon / "utils" / "storage_backend.py").write_text(PAL_STORAGE_BACKEND)
    (daemon / "conversation.py").write_text(CONVERSATION)
    return venv, daemon


def _run(command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=600, check=False)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _daemon_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    return daemon_environ(tmp_path / "data", settings)


def _conversation_across_restarts(venv: Path, daemon: Path, env: dict[str, str]) -> dict:
    python = str(venv / "bin" / "python")
    thread = _run([python, "conversation.py", "create", "chat"], env, daemon).strip()
    _run([python, "conversation.py", "add", thread, "user", "What is a NUL?"], env, daemon)
    _run([python, "conversation.py", "add", thread, "assistant", "A zero byte."], env, daemon)
    return json.loads(_run([python, "conversation.py", "show", thread], env, daemon))


def _expected_turns() -> list[dict]:
    return [{"role": "user", "content": "What is a NUL?"}, {"role": "assistant", "content": "A zero byte."}]


def test_the_wheel_holds_one_package_of_its_own_and_the_schema(installed):
    venv, _ = installed
    site = next((venv / "lib").glob("python3*/site-packages"))
    assert not (site / "utils").exists(), "the wheel must not claim the daemon's utils package"
    def files(sql: Path) -> list[str]:
        return sorted(p.relative_to(sql).as_posix() for p in sql.glob("**/*.sql"))

    shipped = files(site / "conversation_storage" / "sql")
    assert shipped == files(PROJECT_ROOT / "sql")
    assert {name.split("/")[0] for name in shipped} == {"versioned", "repeatable"}


def test_the_wheel_ships_its_type_hints_and_reports_the_distributions_version(installed):
    venv, daemon = installed
    site = next((venv / "lib").glob("python3*/site-packages"))
    assert (site / "conversation_storage" / "py.typed").is_file()
    script = (
        "import importlib.metadata, conversation_storage\n"
        "print(conversation_storage.__version__, importlib.metadata.version('conversation-storage'))\n"
    )
    reported, distributed = _run([str(venv / "bin" / "python"), "-c", script], cwd=daemon).split()
    assert reported == distributed


def test_a_pal_shaped_daemon_keeps_its_conversation_across_restarts_on_sqlite(installed, tmp_path):
    venv, daemon = installed
    env = _daemon_env(tmp_path, CONVERSATION_STORAGE_BACKEND="sqlite",
                      CONVERSATION_SQLITE_PATH=str(tmp_path / "threads.sqlite3"))
    assert _conversation_across_restarts(venv, daemon, env)["turns"] == _expected_turns()


def test_migrate_and_doctor_on_an_empty_postgres_then_the_daemon_runs_on_it(installed, postgres_server, tmp_path):
    venv, daemon = installed
    name = postgres_server.create_database("installed_wheel")
    env = _daemon_env(tmp_path, CONVERSATION_STORAGE_BACKEND="postgres",
                      DATABASE_URL=postgres_server.dsn_for(name, password=PASSWORD))
    cli = str(venv / "bin" / "conversation-storage")
    applied = json.loads(_run([cli, "--json", "migrate"], env, daemon))["files"]
    assert applied == [f"{kind}/{p.name}" for kind in ("versioned", "repeatable")
                       for p in sorted((PROJECT_ROOT / "sql" / kind).glob("*.sql"))]
    doctor = json.loads(_run([cli, "--json", "doctor"], env, daemon))
    assert doctor["ok"] is True, doctor
    assert _conversation_across_restarts(venv, daemon, env)["turns"] == _expected_turns()
    with postgres_server.connect(name) as conn:
        assert conn.execute("select count(*) from public.conversation_threads").fetchone()[0] == 1


def _readme_python_block(containing: str) -> str:
    return fenced_block("README.md", "python", containing)


def test_the_readmes_async_example_runs_in_the_daemon_as_written(installed, tmp_path):
    venv, daemon = installed
    example = _readme_python_block("get_async_storage")
    script = (
        "import asyncio, json\n"
        "class Context:\n"
        "    def model_dump_json(self):\n"
        "        return json.dumps({'turns': ['async']})\n"
        "context, key, ttl_seconds = Context(), 'thread:async-example', 3600\n"
        "async def main():\n"
        + "".join(f"    {line}\n" for line in example.splitlines())
        + "    print(text)\n"
        "asyncio.run(main())\n"
    )
    env = _daemon_env(tmp_path, CONVERSATION_STORAGE_BACKEND="sqlite",
                      CONVERSATION_SQLITE_PATH=str(tmp_path / "threads.sqlite3"))
    out = _run([str(venv / "bin" / "python"), "-c", script], env, daemon)
    assert json.loads(out) == {"turns": ["async"]}


def test_doctor_names_a_cleanup_command_the_wheel_installs(installed, tmp_path):
    venv, daemon = installed
    env = _daemon_env(tmp_path, CONVERSATION_STORAGE_BACKEND="sqlite",
                      CONVERSATION_SQLITE_PATH=str(tmp_path / "threads.sqlite3"))
    cli = str(venv / "bin" / "conversation-storage")
    checks = {c["check"]: c for c in json.loads(_run([cli, "--json", "doctor"], env, daemon))["checks"]}
    assert checks["hourly cleanup"]["fix"] == "run `conversation-storage cleanup` hourly from system cron"
    assert json.loads(_run([cli, "--json", "cleanup"], env, daemon))["deleted"] == 0
