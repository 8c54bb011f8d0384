"""Creating users: shared by the admin pages, the doctor pages and the `radassist users` CLI."""

from portal.models import Role, User, db
from portal.security import hash_password


class AccountError(ValueError):
    pass


def create_user(email: str, name: str, role: Role, password: str, doctor: User | None = None) -> User:
    email = email.strip().lower()
    if "@" not in email or len(email) > 254:
        raise AccountError("a valid email address is required")
    if not name.strip():
        raise AccountError("a name is required")
    if role == Role.PATIENT and (doctor is None or doctor.role != Role.DOCTOR.value):
        raise AccountError("a patient belongs to a doctor")
    if db.session.scalar(db.select(User.id).where(User.email == email)) is not None:
        raise AccountError(f"{email} cannot be used for a new account; if this person already has one, ask your "
                           "administrator")
    user = User(email=email, name=name.strip(), role=role.value, password_hash=hash_password(password),
                doctor_id=doctor.id if doctor else None)
    db.session.add(user)
    db.session.flush()
    return user


def create_from_form(form, role: Role, doctor: User | None = None) -> User:
    """Creates an account from a submitted "new user" form (name, email, password); raises AccountError/WeakPassword."""
    return create_user(form.get("email", ""), form.get("name", ""), role, form.get("password", ""), doctor=doctor)


FIRST_ADMIN_EMAIL = "admin@radassist.local"


def ensure_first_admin() -> str | None:
    """Creates the first admin when there is none (in the app context); returns its one-time password, else None."""
    import secrets

    from portal.security import record

    if db.session.scalar(db.select(User.id).where(User.role == Role.ADMIN.value)) is not None:
        return None
    password = secrets.token_urlsafe(15)
    admin = create_user(FIRST_ADMIN_EMAIL, "RadAssist administrator", Role.ADMIN, password)
    record("admin_created", admin, detail="first admin, created on first start", actor=admin)
    db.session.commit()
    return password
