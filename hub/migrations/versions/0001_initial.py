"""initial schema: GPU leases, spawn events, Unix accounts, native logins

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gpu_leases",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("node", sa.String(255), nullable=False),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(512), nullable=False),
        sa.Column("since", sa.DateTime, nullable=False),
        sa.UniqueConstraint("node", "device", name="uq_gpu_lease_device"),
    )
    op.create_table(
        "spawn_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("owner", sa.String(512), nullable=False),
        sa.Column("spawn_id", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("progress", sa.Integer, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("failed", sa.Boolean, nullable=False),
        sa.Column("ready", sa.Boolean, nullable=False),
    )
    op.create_index("ix_gpu_leases_owner", "gpu_leases", ["owner"])
    op.create_index("ix_spawn_events_owner", "spawn_events", ["owner"])
    op.create_index("ix_spawn_events_spawn_id", "spawn_events", ["spawn_id"])
    op.create_table(
        "unix_accounts",
        sa.Column("hub_user", sa.String(255), primary_key=True),
        sa.Column("unix_name", sa.String(32), nullable=False, unique=True),
        sa.Column("created", sa.DateTime, nullable=False),
    )
    op.create_table(
        "login_accounts",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("password_hash", sa.String(512), nullable=False),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.Column("changed", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    for table in ("login_accounts", "unix_accounts", "spawn_events", "gpu_leases"):
        op.drop_table(table)
