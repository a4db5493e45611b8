"""lockdowns: campus lockdowns and their drills, with who started and ended them and the drill record

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

import gateway.records.models

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lockdowns",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("drill", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("started_at", gateway.records.models.UtcDateTime(timezone=True), nullable=False),
        sa.Column("started_by", sa.String(length=64), nullable=False),
        sa.Column("alarm_id", sa.Integer(), sa.ForeignKey("alarms.id"), nullable=True),
        sa.Column("ended_at", gateway.records.models.UtcDateTime(timezone=True), nullable=True),
        sa.Column("ended_by", sa.String(length=64), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("participants", sa.Text(), nullable=True),
        sa.Column("findings", sa.Text(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("lockdowns")
