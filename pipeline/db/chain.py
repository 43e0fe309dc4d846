"""Independent writes committed together, in one round trip on PostgreSQL.

A step that records a state change writes several rows at once (the ``sent_emails`` row, the
email's new status, its timeline event). As a transaction that is BEGIN, one round trip per
statement and COMMIT; over a network each round trip costs the worker more CPU than the
database's work. :class:`WriteChain` runs such writes as the data-modifying CTEs of a single
statement on PostgreSQL, which commits by itself (run it in a session from
``create_statement_sessionmaker``) and is atomic like the transaction it replaces.

Contract of the writes:

* each has a ``RETURNING`` clause; the chain reports how many rows each returned (for an
  ``INSERT ... ON CONFLICT DO NOTHING``, 0 means the row was there already);
* they are independent: on PostgreSQL all of them see the database as it was before any of
  them ran, so none may read what another writes, and no two may write the same row;
* their bound parameters share one namespace: a name used by two writes is one value. No
  parameter may be named after a column of a table a Core ``insert``/``update`` writes:
  SQLAlchemy would add it to that statement's columns (:meth:`WriteChain.run` refuses those).

On SQLite the writes run in order in the session's transaction: there a round trip is a call
into the same process, and SQLite has no data-modifying CTEs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import UpdateBase, ValuesBase
from sqlalchemy.sql.selectable import TextualSelect

__all__ = ["Write", "WriteChain", "prefixed"]

#: A write with RETURNING: Core ``insert/update/delete(...).returning(...)``, or a textual
#: statement given its columns (``text(...).columns(...)``, as from ``insert_ignoring_conflicts``).
Write = UpdateBase | TextualSelect


def prefixed(prefix: str, **values: Any) -> dict[str, Any]:
    """``values`` as the parameters of a write built with ``param_prefix=prefix``."""
    return {f"{prefix}{name}": value for name, value in values.items()}


class WriteChain:
    """Writes that commit together; built once per call site, run with one dict of parameters."""

    def __init__(self, *writes: Write) -> None:
        if not writes:
            raise ValueError("a chain needs at least one write")
        self._writes = writes
        #: Columns of the tables Core writes insert into or update: no parameter may carry these names.
        self._written_columns = frozenset(
            column.key for write in writes if isinstance(write, ValuesBase) for column in write.table.c
        )
        ctes = [write.cte(f"write_{i}") for i, write in enumerate(writes)]
        self._combined: Select[Any] = select(
            *(select(func.count()).select_from(cte).scalar_subquery().label(f"rows_{i}") for i, cte in enumerate(ctes))
        )

    async def run(self, session: AsyncSession, params: Mapping[str, Any]) -> tuple[int, ...]:
        """Run every write with ``params``; return the rows each one returned, in order."""
        if clash := self._written_columns.intersection(params):
            raise ValueError(f"parameters named after written columns would be written too: {sorted(clash)}")
        if session.bind.dialect.name == "postgresql":
            row = (await session.execute(self._combined, dict(params))).one()
            return tuple(int(n) for n in row)
        counts = []
        for write in self._writes:
            result = await session.execute(write, dict(params))
            counts.append(len(result.all()))
        return tuple(counts)
