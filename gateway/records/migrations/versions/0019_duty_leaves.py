"""duty_leaves: leave requests for duty assignments, approved once a replacement is named

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

import gateway.records.models

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "duty_leaves",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("assignment_id", sa.Integer(), sa.ForeignKey("duty_assignments.id"), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("requested_at", gateway.records.models.UtcDateTime(timezone=True), nullable=False),
        sa.Column("requested_by", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("replacement", sa.String(length=100), nullable=True),
        sa.Column("decided_at", gateway.records.models.UtcDateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(length=64), nullable=True),
    )
    op.create_index("ix_duty_leaves_assignment_id", "duty_leaves", ["assignment_id"])


def downgrade() -> None:
    op.drop_table("duty_leaves")
