"""Index runs by (started_at, id) for `history` and `status` without a run id.

`Journal.list_runs` orders by started_at DESC, id DESC with a LIMIT; without this index every
`history` or `status` sorts the whole runs table, which on a team's shared PostgreSQL journal keeps
every run and rehearsal ever recorded. Additive only: old rows and old writers are unaffected.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_runs_started", "runs", ["started_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_runs_started", table_name="runs")
