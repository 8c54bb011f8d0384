"""Scans keep how a DICOM slice was acquired (scanner, kernel, protocol), for monitoring.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("scans") as table:
        table.add_column(sa.Column("acquisition_json", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("scans") as table:
        table.drop_column("acquisition_json")
