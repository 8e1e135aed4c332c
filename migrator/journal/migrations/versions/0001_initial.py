"""Initial journal schema: runs, migrations, append-only events, locks.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("plan_name", sa.Text, nullable=False),
        sa.Column("plan_path", sa.Text, nullable=False),
        sa.Column("plan_text", sa.Text, nullable=False),
        sa.Column("plan_fingerprint", sa.String(64), nullable=False),
        sa.Column("who", sa.Text, nullable=False),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("exit_code", sa.Integer),
        sa.Column("dry_run", sa.Boolean, nullable=False),
        sa.Column("region", sa.String(32), nullable=False),
        sa.Column("account_id", sa.String(12)),
        sa.Column("options", sa.JSON, nullable=False),
    )
    op.create_index("ix_runs_outcome_started", "runs", ["outcome", "started_at"])
    op.create_table(
        "migrations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("keystore_ref", sa.Text, nullable=False),
        sa.Column("keystore_id", sa.String(64)),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("snapshot", sa.JSON),
        sa.Column("target", sa.JSON, nullable=False),
        sa.Column("disconnected_at", sa.Float),
        sa.Column("reconnected_at", sa.Float),
        sa.Column("verified_at", sa.Float),
        sa.Column("window_seconds", sa.Float),
        sa.Column("outcome", sa.String(32)),
        sa.Column("error", sa.Text),
        sa.Column("attempts", sa.JSON, nullable=False),
        sa.Column("api_calls", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_migrations_run_id", "migrations", ["run_id"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("migration_id", sa.Integer, sa.ForeignKey("migrations.id")),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("from_state", sa.String(32)),
        sa.Column("to_state", sa.String(32)),
        sa.Column("operation", sa.String(64)),
        sa.Column("request_id", sa.String(128)),
        sa.Column("outcome", sa.Text),
        sa.Column("detail", sa.JSON, nullable=False),
        sa.UniqueConstraint("run_id", "seq", name="uq_events_run_seq"),
    )
    op.create_table(
        "locks",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("resource", sa.Text, nullable=False, unique=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("heartbeat_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for table in ("locks", "events", "migrations", "runs"):
        op.drop_table(table)
