"""Failover: while the remote store is unreachable, writes are acknowledged
in a local spool file and replayed, in order, when it is back.
"""
