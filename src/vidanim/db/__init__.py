"""Database access: migrations, an embedded PostgreSQL, connections."""
