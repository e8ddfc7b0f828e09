"""checkpoints: what a restarted hub needs to find each placed server again

Written during a server's start as soon as there is something to find (a pid, a Slurm job id)
and dropped after its teardown, so reconciliation can re-adopt or clean what a hub killed
mid-start left behind.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "server_checkpoints",
        sa.Column("owner", sa.String(512), primary_key=True),
        sa.Column("backend", sa.String(64), nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("updated", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("server_checkpoints")
