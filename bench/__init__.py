"""mailpipe benchmarks: ``python -m bench <scenario> [--db sqlite|postgresql] [--emails N]``.

Every run starts its own RabbitMQ vhost, database, Graph emulator process and mailpipe role
processes, measures, tears them down, prints a table and writes ``bench/results/*.json``.
:func:`bench.runner.run_scenario` is the Python API (the smoke test uses it).
"""

from __future__ import annotations

__all__: list[str] = []
