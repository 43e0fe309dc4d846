"""Persistence: SQLAlchemy models, engine factory and the queries each step needs."""
