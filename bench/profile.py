"""py-spy over each role process: where the CPU time goes, summarised by package and by frame."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.infra import RESULTS

if TYPE_CHECKING:
    from bench.stack import Stack

__all__ = ["Profiler", "summarise"]

_BUCKETS = (
    ("msgraph/kiota", ("kiota", "msgraph", "uritemplate", "azure")),
    ("sqlalchemy", ("sqlalchemy",)),
    ("db driver", ("asyncpg", "aiosqlite", "sqlite3")),
    ("faststream", ("faststream",)),
    ("aio-pika/aiormq/pamqp", ("aio_pika", "aiormq", "pamqp")),
    ("httpx/httpcore/h11", ("httpx", "httpcore", "h11", "anyio")),
    ("pydantic", ("pydantic",)),
    ("logging/otel/prometheus", ("structlog", "logging", "opentelemetry", "prometheus")),
    ("mailpipe", ("pipeline/",)),
    ("asyncio", ("asyncio",)),
)


_IDLE = ("Condition.wait", "EpollSelector.select", "Queue.get", "Event.wait")


def _bucket(frame: str) -> str:
    for name, needles in _BUCKETS:
        if any(n in frame for n in needles):
            return name
    return "other"


def summarise(raw: Path, top: int = 8) -> dict[str, Any]:
    """Folded stacks -> share of samples by the innermost known library, and the hottest frames."""
    buckets: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        if any(idle in frames[-1] for idle in _IDLE):
            continue  # a thread parked in a wait (anyio/aiosqlite workers, the selector): not CPU
        total += n
        chosen = "other"
        for frame in reversed(frames):
            chosen = _bucket(frame)
            if chosen not in ("other", "asyncio"):
                break
        buckets[chosen] += n
        leaves[frames[-1][:120]] += n
    if not total:
        return {"samples": 0}
    return {
        "samples": total,
        "by_library_pct": {k: round(100 * v / total, 1) for k, v in buckets.most_common()},
        "hottest_frames_pct": {k: round(100 * v / total, 1) for k, v in leaves.most_common(top)},
    }


class Profiler:
    """``py-spy record -f raw`` on every role process for ``duration_s`` seconds (idle excluded)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.runs: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}

    def start(self, duration_s: float) -> None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        pyspy = Path(sys.executable).with_name("py-spy")
        for role, proc in self.stack.roles.items():
            out = RESULTS / f"profile-{self.stack.db_kind}-{role}.txt"
            args = [
                str(pyspy),
                "record",
                "-d",
                str(int(duration_s)),
                "-r",
                "100",
                "-f",
                "raw",
                "-o",
                str(out),
                "--pid",
                str(proc.pid),
            ]
            self.runs[role] = (subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), out)

    def finish(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for role, (proc, path) in self.runs.items():
            _, err = proc.communicate(timeout=600)
            if proc.returncode != 0 or not path.exists():
                out[role] = {"error": err.decode(errors="replace")[-300:]}
            else:
                out[role] = {"file": str(path.relative_to(RESULTS.parent.parent)), **summarise(path)}
        return out
