"""Scan images, for the patient and the patient's doctor only (404 for everyone else)."""

from flask import Blueprint, Response, abort, g

from portal.extensions import blobs
from portal.models import Role, Scan, User, db
from portal.security import login_required, record

bp = Blueprint("scans", __name__, url_prefix="/scans")


def sees_patient(patient: User) -> bool:
    """The current user is this patient, or this patient's doctor."""
    if g.user.role == Role.PATIENT.value:
        return patient.id == g.user.id
    return g.user.role == Role.DOCTOR.value and patient.doctor_id == g.user.id


def visible_scan(scan_id: int) -> Scan:
    scan = db.session.get(Scan, scan_id)
    if scan is None or not sees_patient(scan.patient):
        abort(404)
    return scan


@bp.get("/<int:scan_id>/image.png")
@login_required
def image(scan_id: int):
    scan = visible_scan(scan_id)
    record("scan_viewed", scan)
    db.session.commit()
    return Response(blobs.store.get(scan.image_sha256), mimetype="image/png")
