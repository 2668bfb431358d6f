"""Exceptions raised by the storage backends.

Every error the library raises derives from :class:`StorageError`, so callers
can catch one type. Input errors also derive from the built-in ``TypeError`` /
``ValueError`` that Python code conventionally expects for bad arguments.
"""


class StorageError(Exception):
    """Base class of every error raised by this library."""


class StorageTypeError(StorageError, TypeError):
    """An argument has the wrong type; nothing was stored."""


class StorageValueError(StorageError, ValueError):
    """An argument has the right type but an unacceptable value; nothing was stored."""


class StorageConfigurationError(StorageError, ValueError):
    """An environment variable or setting has a value the library cannot use."""


class StorageUnavailableError(StorageError):
    """The store could not be reached (network error, timeout, server unavailable)."""

    #: False when the request certainly did not run and will not: it never
    #: left this process (connection refused), or the server answered that it
    #: could not run it (no database connection, pool exhausted, too many
    #: requests). True when it may yet run (a timeout, a proxy's 502 or 504).
    may_run_later = True


class StoragePermissionError(StorageError):
    """The store refused the credentials (wrong key or role)."""


class StorageSchemaError(StorageError):
    """The table or functions the library needs are missing or out of date."""

    #: The store has no such function (yet): an older schema, or a schema cache not reloaded.
    missing_function = False
    #: What the store answered, without the fix the message adds.
    detail = ""


class StorageClosedError(StorageError):
    """The storage object was closed and cannot be used any more."""


class StorageConflictError(StorageError):
    """An update kept losing to concurrent writers and gave up."""
