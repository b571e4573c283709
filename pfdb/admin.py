"""Administrator accounts: create one, or reset the password of an existing one.

The plain password only passes through here to ``User.set_password`` (a salted werkzeug
hash); it is never stored, logged or part of a result or an error message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .database import db_session_scope, writes_to_primary
from .errors import DuplicateError, ValidationError
from .models.users import User, normalise_email

MIN_PASSWORD_LENGTH = 8


@dataclass(frozen=True)
class AdminResult:
    id: int
    email: str
    created: bool  # False: an existing user was updated

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "email": self.email, "created": self.created, "is_admin": True}


def check_password_strength(password: str) -> None:
    """Raise ``ValidationError`` for a password pfdb will not store."""
    if not isinstance(password, str):
        raise ValidationError("password", "must be text")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError(
            "password", f"must be at least {MIN_PASSWORD_LENGTH} characters long", hint="choose a longer password"
        )
    if not password.strip():
        raise ValidationError("password", "must not be only spaces")


@writes_to_primary("pfdb create-admin")
def create_admin(email: str, password: str, *, update: bool = False) -> AdminResult:
    """Create an administrator; with ``update``, an existing user's password is reset and it is made admin.

    Raises ``ValidationError`` for a bad email or a short password, ``DuplicateError`` when the
    email exists and ``update`` is false.
    Example: ``create_admin("admin@example.com", password)``
    """
    address = normalise_email(email)
    check_password_strength(password)
    with db_session_scope():
        user = User.get_by_email(address)
        if user is not None and not update:
            error = DuplicateError("email", address, "User")
            error.hint = "pass update=True (pfdb create-admin --update) to reset its password"
            raise error
        created = user is None
        user = user or User(email=address)
        user.set_password(password)
        user.is_admin = True
        user.is_active = True
        user.save()
    return AdminResult(id=user.id, email=user.email, created=created)
