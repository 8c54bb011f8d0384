"""Hardening: server-side sessions (revocable), model-server status reported by the workers, a hash of each DICOM's
patient ID (the rest of its PHI is removed at intake), and on PostgreSQL triggers that keep the audit log append-only
and final reports unchanged whatever SQL is run.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_PROTECT = """
CREATE OR REPLACE FUNCTION radassist_refuse_audit_change() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION '% of the audit log is not allowed: it is append-only', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE OR REPLACE FUNCTION radassist_refuse_final_report_change() RETURNS trigger AS $$
BEGIN
  IF TG_OP = 'UPDATE' THEN
    IF OLD.status <> 'final' THEN
      RETURN NEW;
    END IF;
  END IF;
  RAISE EXCEPTION '% of a final report (or of reports) is not allowed: amend it instead', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
  FOR EACH ROW EXECUTE FUNCTION radassist_refuse_audit_change();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
  FOR EACH STATEMENT EXECUTE FUNCTION radassist_refuse_audit_change();
CREATE TRIGGER reports_final_unchanged BEFORE UPDATE OR DELETE ON reports
  FOR EACH ROW EXECUTE FUNCTION radassist_refuse_final_report_change();
CREATE TRIGGER reports_no_truncate BEFORE TRUNCATE ON reports
  FOR EACH STATEMENT EXECUTE FUNCTION radassist_refuse_final_report_change();
"""


def upgrade() -> None:
    op.create_table(
        "user_sessions",
        sa.Column("id", sa.String(64), primary_key=True),          # sha256 of the token the cookie carries
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("last_seen", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
        sa.Column("revoked_at", sa.DateTime, nullable=True),
        sa.Column("remote_addr", sa.String(64), nullable=True),
    )
    op.create_index("ix_user_sessions_user_id", "user_sessions", ["user_id"])
    op.create_table(
        "service_status",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("status_json", sa.Text, nullable=False),
        sa.Column("reported_by", sa.String(128), nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    with op.batch_alter_table("scans") as table:
        table.add_column(sa.Column("dicom_patient_hash", sa.String(64), nullable=True))
        table.add_column(sa.Column("deidentified", sa.Boolean, nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PROTECT)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for trigger, table in (("audit_events_append_only", "audit_events"), ("audit_events_no_truncate",
                                                                               "audit_events"),
                               ("reports_final_unchanged", "reports"), ("reports_no_truncate", "reports")):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
        op.execute("DROP FUNCTION IF EXISTS radassist_refuse_audit_change()")
        op.execute("DROP FUNCTION IF EXISTS radassist_refuse_final_report_change()")
    with op.batch_alter_table("scans") as table:
        table.drop_column("deidentified")
        table.drop_column("dicom_patient_hash")
    op.drop_table("service_status")
    op.drop_index("ix_user_sessions_user_id", "user_sessions")
    op.drop_table("user_sessions")
