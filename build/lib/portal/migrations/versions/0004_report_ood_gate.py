"""Reports record the model's out-of-distribution gate: in domain or not, its score and reason.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reports") as table:
        table.add_column(sa.Column("in_domain", sa.Boolean, nullable=True))
        table.add_column(sa.Column("ood_score", sa.Float, nullable=True))
        table.add_column(sa.Column("ood_reason", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reports") as table:
        table.drop_column("ood_reason")
        table.drop_column("ood_score")
        table.drop_column("in_domain")
