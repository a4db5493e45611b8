"""inspection_items: an inspection's checklist items passed or failed, with a note and a photo; inspections'
period wider (term-2027-02-20-mid)

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

import gateway.records.models

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("inspections") as batch:
        batch.alter_column("period", existing_type=sa.String(length=16), type_=sa.String(length=32),
                           existing_nullable=False)
    op.create_table(
        "inspection_items",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("inspection_id", sa.Integer(), sa.ForeignKey("inspections.id"), nullable=False),
        sa.Column("group", sa.String(length=32), nullable=False),
        sa.Column("item", sa.String(length=200), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("photo", sa.LargeBinary(), nullable=True),
        sa.Column("photo_type", sa.String(length=16), nullable=True),
        sa.Column("at", gateway.records.models.UtcDateTime(timezone=True), nullable=False),
        sa.Column("by", sa.String(length=64), nullable=False),
        sa.Column("hazard_id", sa.Integer(), nullable=True),
    )
    op.create_index("ix_inspection_items_inspection_id", "inspection_items", ["inspection_id"])
    op.create_index("inspection_items_one", "inspection_items", ["inspection_id", "group", "item"], unique=True)


def downgrade() -> None:
    op.drop_table("inspection_items")
    with op.batch_alter_table("inspections") as batch:
        batch.alter_column("period", existing_type=sa.String(length=32), type_=sa.String(length=16),
                           existing_nullable=False)
