"""Durable storage for AI conversation threads.

The public entry point is :mod:`utils.infrastructure.storage_backend`.
"""
