"""The start-up check of the database server: a PostgreSQL without autovacuum is reported."""

from __future__ import annotations

from sqlalchemy import text

from pipeline.db.engine import autovacuum_warning, create_engine, server_warnings
from pipeline.settings import load_settings


def test_autovacuum_off_is_a_warning_that_says_what_to_do_and_on_is_none() -> None:
    assert autovacuum_warning("on") is None
    warning = autovacuum_warning("off")
    assert warning is not None
    assert "autovacuum off" in warning
    assert "VACUUM" in warning


async def test_the_server_check_reads_the_servers_own_setting(database_url: str) -> None:
    engine = create_engine(load_settings(database_url=database_url))
    try:
        warnings = await server_warnings(engine)
        if engine.dialect.name != "postgresql":
            assert warnings == []  # SQLite needs no vacuum for mailpipe's churn to stay cheap
            return
        async with engine.connect() as connection:
            setting = str(await connection.scalar(text("SHOW autovacuum")))
    finally:
        await engine.dispose()
    expected = autovacuum_warning(setting)
    assert warnings == ([expected] if expected else [])
