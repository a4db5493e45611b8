"""guardians (a student's parents and who may collect them) and pickups (children collected at the gate desk)

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

import gateway.records.models

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "guardians",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("student_id", sa.Integer(), sa.ForeignKey("people.id"), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("relation", sa.String(length=16), nullable=False),
        sa.Column("phone_enc", sa.Text(), nullable=True),
        sa.Column("phone_masked", sa.String(length=32), nullable=True),
        sa.Column("may_collect", sa.Boolean(), nullable=False),
        sa.Column("updated_at", gateway.records.models.UtcDateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_guardians_student_id", "guardians", ["student_id"])
    op.create_table(
        "pickups",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("student_id", sa.Integer(), sa.ForeignKey("people.id"), nullable=False),
        sa.Column("guardian_id", sa.Integer(), nullable=True),
        sa.Column("collector", sa.String(length=100), nullable=False),
        sa.Column("authorised", sa.Boolean(), nullable=False),
        sa.Column("at", gateway.records.models.UtcDateTime(timezone=True), nullable=False),
        sa.Column("by", sa.String(length=64), nullable=False),
    )
    op.create_index("ix_pickups_student_id", "pickups", ["student_id"])


def downgrade() -> None:
    op.drop_table("pickups")
    op.drop_table("guardians")
