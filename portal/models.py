"""Database models. Migrations live in portal/migrations (Alembic); the app never creates tables itself."""

import datetime as dt
import enum

import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Role(enum.StrEnum):
    ADMIN = "admin"
    DOCTOR = "doctor"
    PATIENT = "patient"


class User(db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(254), unique=True, index=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    role: Mapped[str] = mapped_column(sa.String(16), index=True)
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    doctor_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"), index=True)  # patients only
    active: Mapped[bool] = mapped_column(default=True)
    failed_logins: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[dt.datetime | None] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    doctor: Mapped["User | None"] = relationship(remote_side=[id], back_populates="patients")
    patients: Mapped[list["User"]] = relationship(back_populates="doctor")


class AuditEvent(db.Model):
    """Who did what, when, from where. Append-only: the application never updates or deletes a row."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    actor_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"), index=True)
    action: Mapped[str] = mapped_column(sa.String(64), index=True)
    object_type: Mapped[str | None] = mapped_column(sa.String(32))
    object_id: Mapped[str | None] = mapped_column(sa.String(64))
    remote_addr: Mapped[str | None] = mapped_column(sa.String(64))
    detail: Mapped[str | None] = mapped_column(sa.Text)

    actor: Mapped[User | None] = relationship()


class AppendOnlyViolation(RuntimeError):
    pass


@event.listens_for(AuditEvent, "before_update")
@event.listens_for(AuditEvent, "before_delete")
def _refuse_audit_changes(mapper, connection, target):
    raise AppendOnlyViolation("audit events are append-only")


class Scan(db.Model):
    """One uploaded CT slice. Bytes live in the blob store under their sha256; this row is the metadata."""

    __tablename__ = "scans"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    uploaded_by_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(sa.String(255))          # the uploaded file's name, display only
    kind: Mapped[str] = mapped_column(sa.String(8))            # png | jpeg | dicom
    original_sha256: Mapped[str] = mapped_column(sa.String(64), index=True)
    image_sha256: Mapped[str] = mapped_column(sa.String(64))   # the normalised grayscale PNG
    width: Mapped[int] = mapped_column()
    height: Mapped[int] = mapped_column()
    modality: Mapped[str | None] = mapped_column(sa.String(16))
    self_submitted: Mapped[bool] = mapped_column(default=False)  # uploaded by the patient: not yet reviewed
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    patient: Mapped[User] = relationship(foreign_keys=[patient_id])
    uploaded_by: Mapped[User] = relationship(foreign_keys=[uploaded_by_id])
