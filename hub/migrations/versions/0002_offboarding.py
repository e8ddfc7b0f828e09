"""offboarding: retired Unix accounts, an optional e-mail per login

A removed person's Unix account is retired, not forgotten: its name is never handed to a
later hub user of the same name (who gets a fresh account) unless the admin restores it.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retired_unix_accounts",
        sa.Column("unix_name", sa.String(32), primary_key=True),
        sa.Column("hub_user", sa.String(255), nullable=False, index=True),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.Column("retired", sa.DateTime, nullable=False),
        sa.Column("archive", sa.Text, nullable=True),
    )
    with op.batch_alter_table("login_accounts") as batch:
        batch.add_column(sa.Column("email", sa.String(320), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("login_accounts") as batch:
        batch.drop_column("email")
    op.drop_table("retired_unix_accounts")
