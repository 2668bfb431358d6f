"""The protocol of the remote stores: each operation is one call of a
function of sql/ (:mod:`.function_calls`), planned with the near cache
(:mod:`.near_cache_calls`), with fallbacks for an older schema.

:class:`.remote_calls.RemoteFunctionStorage` runs it; a backend supplies
only how a call reaches the database.
"""
