"""Nodule segmentation: scans keep their pixel spacing (mm, from DICOM), reports the segmenter's lesions, the
outline picture and the lesion mask.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("scans") as table:
        table.add_column(sa.Column("pixel_spacing_row_mm", sa.Float, nullable=True))
        table.add_column(sa.Column("pixel_spacing_column_mm", sa.Float, nullable=True))
    with op.batch_alter_table("reports") as table:
        table.add_column(sa.Column("segmentation_json", sa.Text, nullable=True))
        table.add_column(sa.Column("outline_sha256", sa.String(64), nullable=True))
        table.add_column(sa.Column("lesion_mask_sha256", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reports") as table:
        table.drop_column("lesion_mask_sha256")
        table.drop_column("outline_sha256")
        table.drop_column("segmentation_json")
    with op.batch_alter_table("scans") as table:
        table.drop_column("pixel_spacing_column_mm")
        table.drop_column("pixel_spacing_row_mm")
