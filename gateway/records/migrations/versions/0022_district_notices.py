"""district_notices: notices the district sends down (an alert, a drill), with who acknowledged them

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

import gateway.records.models

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "district_notices",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("issued_at", gateway.records.models.UtcDateTime(timezone=True), nullable=False),
        sa.Column("issued_by", sa.String(length=64), nullable=False),
        sa.Column("received_at", gateway.records.models.UtcDateTime(timezone=True), nullable=False),
        sa.Column("acked_at", gateway.records.models.UtcDateTime(timezone=True), nullable=True),
        sa.Column("acked_by", sa.String(length=64), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("district_notices")
