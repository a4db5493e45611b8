"""hazards: the outside inspector who found one, and the due-date alerts already given

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hazards") as batch:
        batch.add_column(sa.Column("inspector", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("alerts", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hazards") as batch:
        batch.drop_column("alerts")
        batch.drop_column("inspector")
