"""Files as they were at an earlier commit, read from the repository's history.

Upgrade tests build databases with the SQL of earlier commits. They read it
from git rather than from copies kept in the tree, so the only SQL in the
tree is today's. A clone without that history (``--depth``) cannot run them
and says so.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]

#: The last commit with the pre-release layout, sql/001 to sql/015 applied
#: once each in order. Databases may still be built with any prefix of it;
#: `conversation-storage migrate` brings them to today's layout.
PRE_RELEASE_LAYOUT = "fd7a012"


def git(*args: str) -> str:
    result = subprocess.run(["git", "-C", str(PROJECT_ROOT), *args], check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {result.stderr.strip()} "
                           "(these tests need the repository's history: clone it in full)")
    return result.stdout


@functools.cache
def sql_files_at(commit: str) -> tuple[Path, ...]:
    """The ``*.sql`` files directly in sql/ at ``commit``, in name order, written to a directory of their own."""
    directory = Path(tempfile.mkdtemp(prefix=f"sql-{commit}-"))
    atexit.register(shutil.rmtree, directory, True)
    files = []
    for name in git("ls-tree", "--name-only", commit, "sql/").split():
        if name.endswith(".sql"):
            path = directory / Path(name).name
            path.write_text(git("show", f"{commit}:{name}"))
            files.append(path)
    return tuple(sorted(files))
