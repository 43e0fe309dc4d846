"""Core handles of the mapped tables, for statements on the hot path.

A statement built on a mapped class (``update(IncomingEmail)``) or with its attributes in the
``WHERE`` clause runs through the ORM's bulk-statement machinery (plugin resolution, session
synchronisation, ORM compile state); the same statement built on the ``Table`` skips all of it.
On a worker that is roughly a tenth of its CPU per email, so the per-email writes use these.
Queries that need loaded objects keep using the mapped classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import overload

from sqlalchemy import Table, TextClause, bindparam, text
from sqlalchemy.sql.selectable import TextualSelect

from pipeline.db.models import Base

__all__ = [
    "email_backup_parts",
    "email_backups",
    "email_events",
    "incoming_emails",
    "insert_ignoring_conflicts",
    "sent_emails",
    "worker_receipts",
]

incoming_emails: Table = Base.metadata.tables["incoming_emails"]
email_events: Table = Base.metadata.tables["email_events"]
sent_emails: Table = Base.metadata.tables["sent_emails"]
email_backups: Table = Base.metadata.tables["email_backups"]
email_backup_parts: Table = Base.metadata.tables["email_backup_parts"]
worker_receipts: Table = Base.metadata.tables["worker_receipts"]


@overload
def insert_ignoring_conflicts(
    table: Table,
    columns: Sequence[str],
    *,
    conflict: Sequence[str] = (),
    returning: None = None,
    param_prefix: str = "",
) -> TextClause: ...
@overload
def insert_ignoring_conflicts(
    table: Table,
    columns: Sequence[str],
    *,
    conflict: Sequence[str] = (),
    returning: str,
    param_prefix: str = "",
) -> TextualSelect: ...
def insert_ignoring_conflicts(
    table: Table,
    columns: Sequence[str],
    *,
    conflict: Sequence[str] = (),
    returning: str | None = None,
    param_prefix: str = "",
) -> TextClause | TextualSelect:
    """``INSERT INTO table (columns) VALUES (...) ON CONFLICT [(conflict)] DO NOTHING [RETURNING col]``.

    The same SQL on PostgreSQL and SQLite (3.35+), typed through the table's column types, and
    cacheable: SQLAlchemy 2.0 gives the dialects' ``insert().on_conflict_do_nothing()`` no cache
    key, so each execution recompiled it (about a tenth of the ingest role's CPU). Build the
    statement once and execute it with one parameter per column; no Python-side column default
    is applied, so pass every column. The parameters are named after the columns, with
    ``param_prefix`` in front (a :class:`~pipeline.db.chain.WriteChain` needs names apart).
    """
    unknown = [n for n in [*columns, *conflict, *([returning] if returning else [])] if n not in table.c]
    if unknown:  # only the table's own column names may reach the SQL text
        raise ValueError(f"{table.name} has no column(s) {unknown}")
    target = f" ({', '.join(conflict)})" if conflict else ""
    names, params = ", ".join(columns), ", ".join(f":{param_prefix}{c}" for c in columns)
    sql = f"INSERT INTO {table.name} ({names}) VALUES ({params}) ON CONFLICT{target} DO NOTHING"  # noqa: S608
    binds = [bindparam(f"{param_prefix}{name}", type_=table.c[name].type) for name in columns]
    if returning is None:
        return text(sql).bindparams(*binds)
    return text(f"{sql} RETURNING {returning}").bindparams(*binds).columns(table.c[returning])
