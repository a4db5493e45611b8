"""incidents: the written report's cause, handling, lessons and corrective measures, and when the centre school
passed the report on to the education bureau

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

import gateway.records.models

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

COLUMNS = ("cause", "handling", "lessons", "measures")


def upgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("forwarded_at", gateway.records.models.UtcDateTime(timezone=True), nullable=True))
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        for name in (*COLUMNS, "forwarded_at"):
            batch.drop_column(name)
