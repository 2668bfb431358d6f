"""The stores: memory, SQLite, Postgres (psycopg) and Supabase (its HTTP API),
each with its asyncio twin, and the transport details they need (error
translation, call deadlines, Supabase keys).

Postgres and Supabase are thin transports over :mod:`..remote`.
"""
