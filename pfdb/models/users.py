"""Users: normalised unique emails and werkzeug password hashes that never leave the object."""

from __future__ import annotations

import re

from .._peewee import peewee as pw
from ..errors import ValidationError
from .base import BaseModel, require_text
from .fields import UTCDateTimeField

# Deliberately simple: one @, something on each side, a dot in the domain, no spaces.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def normalise_email(email: str) -> str:
    text = (email or "").strip().lower()
    if not _EMAIL.match(text) or len(text) > 255:
        raise ValidationError("email", f"{email!r} is not a valid email address")
    return text


class User(BaseModel):
    email = pw.CharField(max_length=255, unique=True)
    password_hash = pw.CharField(max_length=255)
    first_name = pw.CharField(max_length=100, null=True)
    last_name = pw.CharField(max_length=100, null=True)
    is_active = pw.BooleanField(default=True)
    is_admin = pw.BooleanField(default=False)
    last_login_at = UTCDateTimeField(null=True)

    repr_fields = ("id", "email", "is_admin")

    class Meta:
        table_name = "users"

    def set_password(self, password: str) -> None:
        """Store a salted hash (werkzeug's default, scrypt); the plain password is not kept."""
        from werkzeug.security import generate_password_hash

        if not password:
            raise ValidationError("password", "must not be empty")
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        from werkzeug.security import check_password_hash

        return bool(self.password_hash) and check_password_hash(self.password_hash, password)

    @property
    def full_name(self) -> str:
        return " ".join(p for p in (self.first_name, self.last_name) if p)

    def validate(self) -> None:
        self.email = normalise_email(self.email)
        if not self.password_hash:
            raise ValidationError("password", "is required; call set_password() first")
        self.first_name = require_text("first_name", self.first_name, 100, allow_empty=True)
        self.last_name = require_text("last_name", self.last_name, 100, allow_empty=True)

    @classmethod
    def get_by_email(cls, email: str) -> User | None:
        return cls.get_or_none(cls.email == (email or "").strip().lower())
