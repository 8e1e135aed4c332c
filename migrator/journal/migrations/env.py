"""Alembic environment for the journal; run only through `Journal.open`, which passes a connection.

The caller holds the migration lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock) and the
transaction, so two processes opening a fresh journal at once cannot both create the schema.
"""

from alembic import context

from migrator.journal.models import VERSION_TABLE, metadata

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError("the journal schema is migrated by Journal.open(url), not by the alembic command")

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=True,  # SQLite cannot ALTER most things; batch mode rebuilds tables instead
)
with context.begin_transaction():
    context.run_migrations()
