"""Patient pages: their own record only."""

from flask import Blueprint, g, render_template

from portal.models import Role
from portal.security import role_required

bp = Blueprint("patient", __name__, url_prefix="/me")


@bp.get("/")
@role_required(Role.PATIENT)
def home():
    return render_template("patient/home.html", patient=g.user)
