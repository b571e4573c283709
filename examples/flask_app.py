"""A Flask application on pfdb: the ``/users`` route, one database connection per request.

Run it (Flask is not a pfdb dependency: ``pip install flask``):

    DATABASE_URL=sqlite:///pfdb.db pfdb init
    DATABASE_URL=sqlite:///pfdb.db flask --app examples/flask_app.py run

``pfdb.flask.init_app`` connects before each request and, at teardown, rolls back any
transaction a view left open and gives the connection back (to the pool on PostgreSQL).
"""

from __future__ import annotations

from flask import Flask, jsonify, request

import pfdb
import pfdb.flask
from pfdb.models import User


def create_app(database_url: str | None = None) -> Flask:
    """Build the app; ``database_url`` defaults to ``DATABASE_URL`` (then ``sqlite:///pfdb.db``)."""
    app = Flask(__name__)
    pfdb.init_database(database_url)
    pfdb.flask.init_app(app)

    @app.get("/users")
    def list_users():
        """Users as JSON, newest first; ``?admin=1`` lists administrators only. No password hashes."""
        query = User.select().order_by(User.id.desc())
        if request.args.get("admin") in ("1", "true", "yes"):
            query = query.where(User.is_admin == True)  # noqa: E712  (peewee builds SQL from ==)
        return jsonify([
            {
                "id": user.id,
                "email": user.email,
                "name": user.full_name or None,
                "is_admin": user.is_admin,
                "is_active": user.is_active,
                "created_at": user.created_at.isoformat(),
                "last_login_at": user.last_login_at.isoformat() if user.last_login_at else None,
            }
            for user in query
        ])

    @app.get("/health")
    def health():
        report = pfdb.database_health_check()
        return jsonify(report), 200 if report["status"] == "healthy" else 503

    return app


if __name__ == "__main__":  # pragma: no cover
    create_app().run(debug=False)
