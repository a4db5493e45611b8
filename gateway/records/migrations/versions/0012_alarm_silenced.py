"""alarm silenced: who silenced an alarm's sirens, and when, without acknowledging it

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

import gateway.records.models

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("alarms", schema=None) as batch_op:
        batch_op.add_column(sa.Column("silenced_at", gateway.records.models.UtcDateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column("silenced_by", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alarms", schema=None) as batch_op:
        batch_op.drop_column("silenced_by")
        batch_op.drop_column("silenced_at")
