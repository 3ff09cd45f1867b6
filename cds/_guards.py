"""Application-wide input guards of the web app, applied before any view runs.

* A NUL character in the path, a query argument or a form field is answered 400 naming
  the argument: no database column can store one (PostgreSQL refuses it outright).
* ``<int:...>`` path segments stop at 2**31 - 1 (the range of the id columns): a larger
  id is a 404 like any unknown id, not a database overflow.
* A database ``DataError`` (a value that does not fit its column) is answered 400 and an
  ``IntegrityError`` 409; the log names the exception type and the path only.  Engines are
  created with ``hide_parameters=True`` (:func:`cds.db.session.make_engine`), so no SQL
  parameter (a comment, a password) reaches an error message or the log either.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, abort, jsonify, request
from sqlalchemy.exc import DataError, IntegrityError
from werkzeug.exceptions import BadRequest, Conflict
from werkzeug.routing import IntegerConverter, Map

log = logging.getLogger("mprtm.app")

#: Largest id a path segment may carry (the id columns are 32-bit integers).
MAX_PATH_ID = 2**31 - 1


class BoundedIntConverter(IntegerConverter):
    """Werkzeug's ``int`` converter, limited to ``0..MAX_PATH_ID`` unless a route says more.

    Args:
        url_map: the application's URL map.
        *args: passed to :class:`~werkzeug.routing.IntegerConverter`.
        **kwargs: likewise; ``max`` defaults to :data:`MAX_PATH_ID`.
    """

    def __init__(self, url_map: Map, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", MAX_PATH_ID)
        super().__init__(url_map, *args, **kwargs)


def path_id(raw: str) -> int | None:
    """``raw`` as a row id (``0..MAX_PATH_ID``), or None when it is not one."""
    raw = raw.strip()
    if not raw.isascii() or not raw.isdigit() or len(raw) > 10:
        return None
    value = int(raw)
    return value if value <= MAX_PATH_ID else None


def _refuse_nul() -> None:
    if "\x00" in request.path:
        abort(400, description="the URL path contains a NUL character")
    for where, values in (("query argument", request.args), ("form field", request.form)):
        for name, value in values.items(multi=True):
            if "\x00" in name or "\x00" in value:
                shown = name.replace("\x00", "\\0")[:40]
                abort(400, description=f"{where} {shown!r} contains a NUL character")


def _data_error(exc: DataError) -> Any:
    log.warning("400 on %s: %s (a value does not fit its column)", request.path, type(exc).__name__)
    return _answer(
        BadRequest("a value does not fit its database column (too long or out of range)")
    )


def _integrity_error(exc: IntegrityError) -> Any:
    log.warning("409 on %s: %s", request.path, type(exc).__name__)
    return _answer(Conflict("the change conflicts with stored data"))


def _answer(exc: BadRequest | Conflict) -> Any:
    if request.path.startswith("/cds-services"):
        resp = jsonify(
            {"error": (exc.name or "error").lower().replace(" ", "-"), "message": exc.description}
        )
        resp.status_code = exc.code
        return resp
    return exc


def init_app(app: Flask) -> None:
    """Install the guards; call before any blueprint is registered (the converter)."""
    app.url_map.converters["int"] = BoundedIntConverter
    app.before_request(_refuse_nul)
    app.register_error_handler(DataError, _data_error)
    app.register_error_handler(IntegrityError, _integrity_error)
