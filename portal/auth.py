"""Login, logout and password change for every role."""

from flask import Blueprint, flash, g, redirect, render_template, request, url_for

from portal import sessions
from portal.extensions import limiter, login_limit, password_limit, user_key
from portal.models import Role, db
from portal.security import (
    WeakPassword,
    authenticate,
    hash_password,
    login_required,
    record,
    safe_next,
    verify_password,
)

bp = Blueprint("auth", __name__)
HOME = {Role.ADMIN.value: "admin.doctors", Role.DOCTOR.value: "doctor.worklist_page",
        Role.PATIENT.value: "patient.home"}


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
            sessions.start(user)
            g.user = user
            record("login", user)
            db.session.commit()
            return redirect(safe_next(request.args.get("next")) or home_url())  # never to another site
        flash(error, "error")
        return render_template("auth/login.html"), 401
    return render_template("auth/login.html")


@bp.post("/logout")
@login_required
def logout():
    record("logout", g.user)
    sessions.end()
    db.session.commit()
    return redirect(url_for("auth.login"))


@bp.route("/password", methods=["GET", "POST"])
@login_required
@limiter.limit(password_limit, methods=["POST"], key_func=user_key)
def change_password():
    if request.method == "POST":
        if not verify_password(g.user, request.form.get("current", "")):
            record("password_change_failed", g.user)
            db.session.commit()
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
        ended = sessions.revoke_all(g.user, keep_current=True)
        record("password_changed", g.user, detail=f"{ended} other sessions ended")
        db.session.commit()
        flash("Password changed. Any other sessions of yours were logged out.", "info")
        return redirect(home_url())
    return render_template("auth/password.html")
