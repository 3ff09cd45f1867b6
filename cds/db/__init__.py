"""Application database: one SQLAlchemy ``Base``, the models, engine and sessions."""

from cds.db.base import Base
from cds.db.session import make_engine, session_factory, session_scope

__all__ = ["Base", "make_engine", "session_factory", "session_scope"]
