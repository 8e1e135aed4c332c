"""The journal: SQLAlchemy Core tables, Alembic migrations, the repository and the per-store locks.

Imports nothing of the engine, preflight or CLI; of the AWS layer only the secret type it refuses to store.
"""
