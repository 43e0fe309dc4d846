"""Alembic migrations; applied with ``mailpipe db upgrade``."""
