"""Where a role's memory goes over a run: ``tracemalloc`` snapshots, and what grew between two.

``python -m bench.tracemem run DIR INTERVAL_S pipeline-args...`` runs ``python -m pipeline
pipeline-args...`` with tracemalloc on, writing ``DIR/<n>.snap`` every ``INTERVAL_S`` and once
more at exit; ``python -m bench.tracemem growth A.snap B.snap`` prints the tracebacks whose live
memory grew most from A to B. ``python -m bench --trace-memory ROLES`` starts those roles this
way. Tracing costs CPU and memory of its own, so a traced run's RSS and throughput are not figures
to report; only the growth between its snapshots is.
"""

from __future__ import annotations

import atexit
import importlib
import json
import runpy
import sys
import threading
import tracemalloc
from pathlib import Path
from typing import Any

__all__ = ["FRAMES", "growth", "traced_command"]

FRAMES = 12
_IGNORE = (
    tracemalloc.Filter(inclusive=False, filename_pattern=tracemalloc.__file__),
    tracemalloc.Filter(inclusive=False, filename_pattern="<frozen importlib._bootstrap*>"),
    tracemalloc.Filter(inclusive=False, filename_pattern="<unknown>"),
)


def traced_command(python: str, role_args: list[str], directory: Path, interval_s: float) -> list[str]:
    return [python, "-m", "bench.tracemem", "run", str(directory), str(interval_s), *role_args]


def _snapshots(directory: Path, interval_s: float) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    count = 0
    lock = threading.Lock()

    def dump() -> None:
        nonlocal count
        with lock:
            tracemalloc.take_snapshot().dump(str(directory / f"{count:04d}.snap"))
            count += 1

    def loop() -> None:
        while not stop.wait(interval_s):
            dump()

    stop = threading.Event()
    threading.Thread(target=loop, daemon=True, name="tracemem").start()
    atexit.register(dump)


def growth(before: Path, after: Path, top: int = 15) -> list[dict[str, Any]]:
    """The ``top`` tracebacks whose live bytes grew most from ``before`` to ``after``."""
    old = tracemalloc.Snapshot.load(str(before)).filter_traces(_IGNORE)
    new = tracemalloc.Snapshot.load(str(after)).filter_traces(_IGNORE)
    grown = sorted(new.compare_to(old, "traceback"), key=lambda stat: stat.size_diff, reverse=True)
    out = []
    for stat in grown[:top]:
        frames = [f"{frame.filename.split('site-packages/')[-1]}:{frame.lineno}" for frame in stat.traceback]
        out.append(
            {
                "grew_kib": round(stat.size_diff / 1024, 1),
                "live_kib": round(stat.size / 1024, 1),
                "blocks_grew": stat.count_diff,
                "where": frames,  # the innermost frame last, as a Python traceback reads
            }
        )
    return out


def main() -> None:
    command, *args = sys.argv[1:]
    if command == "growth":
        print(json.dumps(growth(Path(args[0]), Path(args[1])), indent=1))
        return
    directory, interval_s, *role_args = args
    # Imported before tracing starts: importing msgraph-sdk under tracemalloc takes minutes, and
    # what an import allocates stays put, so it would only be noise in the growth.
    importlib.import_module("pipeline.app")
    importlib.import_module("pipeline.cli.main")
    tracemalloc.start(FRAMES)
    _snapshots(Path(directory), float(interval_s))
    sys.argv = ["pipeline", *role_args]
    runpy.run_module("pipeline", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
