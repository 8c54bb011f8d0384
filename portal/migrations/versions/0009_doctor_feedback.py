"""Doctor feedback as labels: at sign-off the doctor says whether they agree with the model and, if not, the class
they confirm or that the scan is not assessable; kept with the report version it was given on.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reports") as table:
        table.add_column(sa.Column("doctor_agrees", sa.Boolean, nullable=True))
        table.add_column(sa.Column("confirmed_class", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reports") as table:
        table.drop_column("confirmed_class")
        table.drop_column("doctor_agrees")
