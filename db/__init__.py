"""The database layer: connection, migrations and small repository functions. Knows nothing of torch."""

from loracle.db.server import Database, DatabaseUnavailable, connect

__all__ = ["Database", "DatabaseUnavailable", "connect"]
