"""Scene state in a real database: SQLAlchemy async (SQLite by default, PostgreSQL by URL), schema
managed by Alembic migrations. Only this package speaks SQL; it hands out the pydantic records of
:mod:`lmd_bot.scenes`, never ORM rows."""

from lmd_bot.db.engine import Database, open_database
from lmd_bot.db.repository import Repository

__all__ = ["Database", "Repository", "open_database"]
