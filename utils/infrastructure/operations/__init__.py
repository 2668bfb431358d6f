"""Running the library: settings from the environment, the factory that
picks a backend, the `conversation-storage` command, schema migrations and
cleanup.
"""
