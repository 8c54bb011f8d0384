"""Login, logout and password change for every role."""

from flask import Blueprint, flash, g, redirect, render_template, request, session, url_for

from portal.extensions import limiter, login_limit
from portal.models import Role, db
from portal.security import WeakPassword, authenticate, hash_password, login_required, record, verify_password

bp = Blueprint("auth", __name__)
HOME = {Role.ADMIN.value: "admin.doctors", Role.DOCTOR.value: "doctor.patients", Role.PATIENT.value: "patient.home"}


def home_url() -> str:
    return url_for(HOME[g.user.role])


@bp.get("/")
def index():
    return redirect(home_url() if g.user else url_for("auth.login"))


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(login_limit, methods=["POST"])
def login():
    if request.method == "POST":
        user, error = authenticate(request.form.get("email", ""), request.form.get("password", ""))
        if user is not None:
            session.clear()
            session["user_id"] = user.id
            g.user = user
            record("login", user)
            db.session.commit()
            target = request.args.get("next", "")
            # Only local paths: never redirect to another site.
            return redirect(target if target.startswith("/") and not target.startswith("//") else home_url())
        flash(error, "error")
        return render_template("auth/login.html"), 401
    return render_template("auth/login.html")


@bp.post("/logout")
@login_required
def logout():
    record("logout", g.user)
    db.session.commit()
    session.clear()
    return redirect(url_for("auth.login"))


@bp.route("/password", methods=["GET", "POST"])
@login_required
def change_password():
    if request.method == "POST":
        if not verify_password(g.user, request.form.get("current", "")):
            flash("Your current password is not correct.", "error")
            return render_template("auth/password.html"), 400
        if request.form.get("new") != request.form.get("confirm"):
            flash("The new passwords do not match.", "error")
            return render_template("auth/password.html"), 400
        try:
            g.user.password_hash = hash_password(request.form.get("new", ""))
        except WeakPassword as weak:
            flash(str(weak), "error")
            return render_template("auth/password.html"), 400
        record("password_changed", g.user)
        db.session.commit()
        flash("Password changed.", "info")
        return redirect(home_url())
    return render_template("auth/password.html")
