"""The worklist: reports keep the cancer probability and the lesion count as columns to sort and filter by, and the
indexes its queries use.

Existing reports are filled in from their JSON: the cancer probability as 1 - P("normal") where the report has that
class (models before contract field ``negative_classes`` named no negative class; "normal" is the only one any
RadAssist model had), the lesion count from the segmentation.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reports") as table:
        table.add_column(sa.Column("cancer_probability", sa.Float, nullable=True))
        table.add_column(sa.Column("lesion_count", sa.Integer, nullable=True))
    op.create_index("ix_scans_patient_created", "scans", ["patient_id", "created_at"])
    op.create_index("ix_jobs_scan_id_id", "jobs", ["scan_id", "id"])
    reports = sa.table("reports", sa.column("id", sa.Integer), sa.column("probabilities_json", sa.Text),
                       sa.column("segmentation_json", sa.Text), sa.column("cancer_probability", sa.Float),
                       sa.column("lesion_count", sa.Integer))
    connection = op.get_bind()
    rows = connection.execute(sa.select(reports.c.id, reports.c.probabilities_json, reports.c.segmentation_json))
    for report_id, probabilities_json, segmentation_json in rows.fetchall():
        probabilities = json.loads(probabilities_json or "{}")
        segmentation = json.loads(segmentation_json) if segmentation_json else None
        values = {}
        if "normal" in probabilities:
            values["cancer_probability"] = round(max(0.0, 1.0 - float(probabilities["normal"])), 6)
        if segmentation and not segmentation.get("error"):
            values["lesion_count"] = int(segmentation.get("lesion_count", 0))
        if values:
            connection.execute(reports.update().where(reports.c.id == report_id).values(**values))


def downgrade() -> None:
    op.drop_index("ix_jobs_scan_id_id", "jobs")
    op.drop_index("ix_scans_patient_created", "scans")
    with op.batch_alter_table("reports") as table:
        table.drop_column("lesion_count")
        table.drop_column("cancer_probability")
