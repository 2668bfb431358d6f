"""Durable storage for AI conversation threads.

Installed, this package is ``conversation_storage``: a name of its own, which
no daemon's ``utils`` package can shadow. In the repository, and in daemons
that vendor the folder, the same files are ``utils.infrastructure``, whose
module :mod:`.storage_backend` is the documented entry point there.

    from conversation_storage import get_storage_backend
"""

from __future__ import annotations

from . import storage_backend as _api
from .storage_backend import __all__

#: The library's version, stated only here: pyproject.toml reads it for the distribution.
__version__ = "0.1.0"

# The public API of storage_backend, but for the backends it imports on first
# use (the Supabase client and psycopg are slow to import).
globals().update({name: getattr(_api, name) for name in __all__ if name not in _api.LAZY_NAMES})


def __getattr__(name: str):
    if name in _api.LAZY_NAMES:
        return getattr(_api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
