"""Scan images, for the patient and the patient's doctor only (404 for everyone else)."""

import io

from flask import Blueprint, Response, abort, g, jsonify, request, url_for
from PIL import Image

from portal import segmentation, viewer
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


def _viewer_image(scan: Scan) -> viewer.ViewerImage:
    return viewer.viewer_image(scan.kind, blobs.store.get(scan.original_sha256))


@bp.get("/<int:scan_id>/viewer.json")
@login_required
def viewer_description(scan_id: int):
    """Size, unit (HU or grey), pixel spacing and window presets of the scan's full-resolution pixels."""
    scan = visible_scan(scan_id)
    described = _viewer_image(scan).describe()
    described["pixels_url"] = url_for("scans.viewer_pixels", scan_id=scan.id)
    return jsonify(described)


@bp.get("/<int:scan_id>/pixels.bin")
@login_required
def viewer_pixels(scan_id: int):
    """The full-resolution pixels, little-endian int16 row by row (viewer.json gives the size), for the viewer to
    window as the doctor drags."""
    scan = visible_scan(scan_id)
    record("scan_viewed", scan, detail="viewer")
    db.session.commit()
    return Response(viewer.pixels(_viewer_image(scan)), mimetype="application/octet-stream")


@bp.get("/<int:scan_id>/rendered.png")
@login_required
def rendered(scan_id: int):
    """The full-resolution scan through a window (``?centre=&width=``, default the first preset), rendered here."""
    scan = visible_scan(scan_id)
    image = _viewer_image(scan)
    try:
        centre, width = viewer.parse_window(request.args.get("centre"), request.args.get("width"), image)
    except viewer.WindowError as error:
        return jsonify({"error": str(error)}), 400
    record("scan_viewed", scan, detail=f"rendered {centre:g}/{width:g}")
    db.session.commit()
    return Response(viewer.render_png(image, centre, width), mimetype="image/png")


THUMBNAIL_SIDE = 128  # the worklist's pictures: twice the shown size, for high-density screens


@bp.get("/<int:scan_id>/thumbnail.png")
@login_required
def thumbnail(scan_id: int):
    """A small picture of the scan for lists. Not audited one by one: the list that shows it is (a page of 100
    thumbnails would otherwise write 100 audit rows). Like every page of a signed-in user, never cached."""
    scan = visible_scan(scan_id)
    with Image.open(io.BytesIO(blobs.store.get(scan.image_sha256))) as image:
        image = image.convert("L")
        image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
    return Response(buffer.getvalue(), mimetype="image/png")


def patient_pseudonym(scan: Scan) -> str:
    """The PatientID that downloads of a scan's DICOM objects carry: the portal's own, never the upload's."""
    return f"RADASSIST-{scan.patient_id}"


def attachment(content: bytes, mimetype: str, filename: str) -> Response:
    """A download of clinical content: saved, never cached (reports, DICOM objects)."""
    return Response(content, mimetype=mimetype,
                    headers={"Content-Disposition": f'attachment; filename="{filename}"',
                             "Cache-Control": "private, no-store"})


@bp.get("/<int:scan_id>/scan.dcm")
@login_required
def dicom(scan_id: int):
    """The de-identified DICOM the portal keeps of a DICOM upload (what a report's DICOM SEG references)."""
    scan = visible_scan(scan_id)
    if scan.kind != "dicom":
        abort(404)
    record("scan_downloaded", scan, detail="dicom")
    db.session.commit()
    dataset = segmentation.downloadable_dicom(blobs.store.get(scan.original_sha256), patient_pseudonym(scan))
    return attachment(segmentation.dicom_bytes(dataset), "application/dicom", f"radassist-scan-{scan.id}.dcm")
