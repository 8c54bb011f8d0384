"""Database models. Migrations live in portal/migrations (Alembic); the app never creates tables itself."""

import datetime as dt
import enum
import json

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


class UserSession(db.Model):
    """One login. The cookie carries a random token; this row (keyed by the token's sha256) says whether it is still
    good: logout revokes it, a password change or a disabled account revokes all of the user's sessions, and it
    ends after PERMANENT_SESSION_LIFETIME or SESSION_IDLE_SECONDS without a request."""

    __tablename__ = "user_sessions"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column()
    revoked_at: Mapped[dt.datetime | None] = mapped_column()
    remote_addr: Mapped[str | None] = mapped_column(sa.String(64))

    user: Mapped[User] = relationship()


class ServiceStatus(db.Model):
    """What a background process last saw of a service (the model server's versions, reported by the workers, which
    alone may reach it), for the admin pages."""

    __tablename__ = "service_status"
    MODEL_SERVER = "model_server"  # the row the report workers keep current

    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    status_json: Mapped[str] = mapped_column(sa.Text)
    reported_by: Mapped[str] = mapped_column(sa.String(128))
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    @property
    def status(self) -> dict:
        return json.loads(self.status_json)


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
    __table_args__ = (sa.Index("ix_scans_patient_created", "patient_id", "created_at"),)  # the worklist's

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
    # DICOM only: the original is stored de-identified; this keyed hash of its PatientID is all that is kept of it,
    # to warn when a later upload for the same portal patient names another patient.
    dicom_patient_hash: Mapped[str | None] = mapped_column(sa.String(64))
    deidentified: Mapped[bool | None] = mapped_column()
    # Millimetres between pixel centres of the stored image (rows, columns), from DICOM's PixelSpacing (scaled when
    # the image was stored downscaled); None when the upload does not say (PNG, JPEG): sizes are then in pixels.
    pixel_spacing_row_mm: Mapped[float | None] = mapped_column()
    pixel_spacing_column_mm: Mapped[float | None] = mapped_column()
    # DICOM only: how it was acquired (portal.intake.ACQUISITION_KEYWORDS: scanner, kernel, protocol), as JSON.
    acquisition_json: Mapped[str | None] = mapped_column(sa.Text)

    @property
    def pixel_spacing_mm(self) -> tuple[float, float] | None:
        if self.pixel_spacing_row_mm and self.pixel_spacing_column_mm:
            return self.pixel_spacing_row_mm, self.pixel_spacing_column_mm
        return None
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    patient: Mapped[User] = relationship(foreign_keys=[patient_id])
    uploaded_by: Mapped[User] = relationship(foreign_keys=[uploaded_by_id])

    @property
    def source(self) -> str:
        """Who sent the scan in (monitoring slices by it): ``doctor_upload`` or ``patient_upload``."""
        return "patient_upload" if self.self_submitted else "doctor_upload"


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class Batch(db.Model):
    """One upload's worth of analysis jobs: what the live progress bar counts."""

    __tablename__ = "batches"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_by_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    patient_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    created_by: Mapped[User] = relationship(foreign_keys=[created_by_id])
    patient: Mapped[User] = relationship(foreign_keys=[patient_id])
    jobs: Mapped[list["Job"]] = relationship(back_populates="batch", order_by="Job.id")


class Job(db.Model):
    """Analysis of one scan by the model. The row is the source of truth; the queue only says which to run next.

    A worker claims a job by switching it queued -> running in one conditional UPDATE, so a job offered twice
    (a Redis message re-sent after a crash) still runs once. A running job whose lease runs out (its worker
    died) goes back to queued.
    """

    __tablename__ = "jobs"
    __table_args__ = (sa.Index("ix_jobs_scan_id_id", "scan_id", "id"),)  # a scan's latest job

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(sa.ForeignKey("batches.id"), index=True)
    scan_id: Mapped[int] = mapped_column(sa.ForeignKey("scans.id"), index=True)
    status: Mapped[str] = mapped_column(sa.String(16), default=JobStatus.QUEUED.value, index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    not_before: Mapped[dt.datetime] = mapped_column(default=utcnow)   # retry backoff
    lease_until: Mapped[dt.datetime | None] = mapped_column()
    worker: Mapped[str | None] = mapped_column(sa.String(128))
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column()
    finished_at: Mapped[dt.datetime | None] = mapped_column()

    batch: Mapped[Batch] = relationship(back_populates="jobs")
    scan: Mapped["Scan"] = relationship()


NOT_ASSESSABLE = "not_assessable"  # a doctor's label: the image does not allow a reading


class ReportStatus(enum.StrEnum):
    DRAFT = "draft"
    FINAL = "final"


def class_title(class_name: str, titles_json: str | None) -> str:
    """The display name a report's model gave ``class_name`` ("large.cell.carcinoma" -> "Large cell carcinoma")."""
    titles = json.loads(titles_json) if titles_json else {}
    return titles.get(class_name) or class_name.replace(".", " ").replace("_", " ").capitalize()


class Report(db.Model):
    """One version of a scan's report. Version 1 is the model's draft; a final report is never changed again:
    an amendment is a new version (``supersedes_id`` -> the version it corrects)."""

    __tablename__ = "reports"
    __table_args__ = (sa.UniqueConstraint("scan_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    scan_id: Mapped[int] = mapped_column(sa.ForeignKey("scans.id"), index=True)
    version: Mapped[int] = mapped_column(default=1)
    supersedes_id: Mapped[int | None] = mapped_column(sa.ForeignKey("reports.id"))
    status: Mapped[str] = mapped_column(sa.String(16), default=ReportStatus.DRAFT.value)
    predicted_class: Mapped[str] = mapped_column(sa.String(64))
    probabilities_json: Mapped[str] = mapped_column(sa.Text)     # {"adenocarcinoma": 0.61, ...}, calibrated,
                                                                 # in the model's class order
    # {"adenocarcinoma": "Adenocarcinoma", ...}: display names from the model's info (None: reports written before
    # models described themselves; class_title derives a name)
    class_titles_json: Mapped[str | None] = mapped_column(sa.Text)
    uncertain: Mapped[bool] = mapped_column(default=False)
    # The model's out-of-distribution gate: False when the scan is unlike the images the model was validated on
    # (the report then says "not analysed"); None for reports of models without a gate.
    in_domain: Mapped[bool | None] = mapped_column()
    ood_score: Mapped[float | None] = mapped_column()               # distance / the model's threshold (1.0)
    ood_reason: Mapped[str | None] = mapped_column(sa.String(64))   # machine-readable, e.g. "not_greyscale"
    overlay_sha256: Mapped[str] = mapped_column(sa.String(64))   # Grad-CAM overlay (JPEG) in the blob store
    # The segmenter's answer (portal/segmentation.py's SegmentationResult as JSON: model, threshold, lesions in px
    # and mm, or why there is none); None for reports written before segmentation. The outline picture (the scan
    # with the lesions drawn, PNG) and the lesion mask (PNG, 255 = lesion, at the stored image's size).
    segmentation_json: Mapped[str | None] = mapped_column(sa.Text)
    outline_sha256: Mapped[str | None] = mapped_column(sa.String(64))
    lesion_mask_sha256: Mapped[str | None] = mapped_column(sa.String(64))
    # What the worklist sorts and filters by, kept as columns (the JSON above cannot be ordered by in SQL): the
    # probability of any class but the model's negative ones (None when the model names none) and the lesions
    # the segmenter found (None: no segmentation).
    cancer_probability: Mapped[float | None] = mapped_column()
    lesion_count: Mapped[int | None] = mapped_column()
    # The signing doctor's label (migration 0009): whether they agree with the model's class (None: the model gave
    # none, or not assessable) and the class they confirm, or NOT_ASSESSABLE. Set at sign-off, with the version.
    doctor_agrees: Mapped[bool | None] = mapped_column()
    confirmed_class: Mapped[str | None] = mapped_column(sa.String(64))
    model_name: Mapped[str] = mapped_column(sa.String(128))
    model_version: Mapped[int] = mapped_column()
    findings: Mapped[str] = mapped_column(sa.Text, default="")
    amendment_reason: Mapped[str | None] = mapped_column(sa.Text)
    pdf_sha256: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    author_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))   # None: written by the model
    signed_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    signed_at: Mapped[dt.datetime | None] = mapped_column()

    scan: Mapped[Scan] = relationship()
    author: Mapped[User | None] = relationship(foreign_keys=[author_id])
    signed_by: Mapped[User | None] = relationship(foreign_keys=[signed_by_id])
    supersedes: Mapped["Report | None"] = relationship(remote_side=[id])

    @property
    def probabilities(self) -> dict[str, float]:
        return json.loads(self.probabilities_json)

    @property
    def confidence(self) -> float:
        return self.probabilities[self.predicted_class]

    @property
    def segmentation(self):
        """The segmentation result (portal.segmentation.SegmentationResult), or None before segmentation."""
        from portal.segmentation import SegmentationResult

        return SegmentationResult.from_json(self.segmentation_json) if self.segmentation_json else None

    def class_title(self, class_name: str) -> str:
        return class_title(class_name, self.class_titles_json)

    @property
    def out_of_domain(self) -> bool:
        """The model withheld its prediction: the scan is outside the images it was validated on."""
        return self.in_domain is False

    @property
    def needs_review(self) -> bool:
        """Out of domain or uncertain: the model's output alone says nothing a patient should read."""
        return self.out_of_domain or self.uncertain

    @property
    def is_final(self) -> bool:
        return self.status == ReportStatus.FINAL.value

    @property
    def state(self) -> str:
        """draft, final, amendment (a draft correcting a final version) or amended (a final correction)."""
        if self.version > 1:
            return "amended" if self.is_final else "amendment"
        return self.status

    def visible_to(self, user: User) -> bool:
        """Whether ``user``'s role may see this version of a report they may otherwise access: patients see
        final reports, and the model's own draft only for scans they submitted themselves, only while no doctor has
        written in it (a doctor's unsigned words are not released) and only when the model's output stands on its
        own (not out of domain, not uncertain): otherwise they are awaiting their doctor."""
        if user.role != Role.PATIENT.value or self.is_final:
            return True
        untouched = self.version == 1 and self.author_id is None and not self.findings
        return self.scan.self_submitted and untouched and not self.needs_review


class ImmutableReport(RuntimeError):
    """A final report was about to be changed or deleted; amend it instead."""


@event.listens_for(Report, "before_update")
def _refuse_final_changes(mapper, connection, target):
    state = sa.inspect(target)
    if not state.session.is_modified(target, include_collections=False):
        return
    status = state.attrs.status.history
    was = status.deleted[0] if status.deleted else target.status
    if was == ReportStatus.FINAL.value:
        raise ImmutableReport(f"report {target.id} is final; amend it instead")


@event.listens_for(Report, "before_delete")
def _refuse_report_delete(mapper, connection, target):
    raise ImmutableReport("reports are never deleted")
