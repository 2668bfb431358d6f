"""The contract every backend keeps: the storage interfaces, their errors, and
the validation that refuses bad input before anything is stored.

Nothing here talks to a store; every other layer builds on it.
"""
