"""CPU seconds and peak RSS of process groups (mailpipe roles, broker, database, emulator), via psutil."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable

import psutil

__all__ = ["Monitor", "broker_pids", "postgres_pids"]


def _by_name(match: Callable[[psutil.Process], bool]) -> list[int]:
    pids = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if match(proc):
                pids.append(proc.pid)
    return pids


def broker_pids() -> list[int]:
    """RabbitMQ's Erlang VM (``beam.smp``); epmd and inet_gethost are negligible."""
    return _by_name(
        lambda p: (
            (p.info["name"] or "").startswith("beam")
            and not any("rabbitmqctl" in arg or "escript" in arg for arg in p.info["cmdline"] or [])
        )
    )


def postgres_pids() -> list[int]:
    """Every postgres process (postmaster and all backends, so other clients' work is included)."""
    return _by_name(lambda p: p.info["name"] == "postgres")


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


class Monitor:
    """Samples RSS every ``interval_s`` in a thread; CPU is the difference between start and stop.

    Groups are name -> pids; a group's children (Celery's pool, postgres backends forked later) are
    included in CPU by re-reading them at each sample. Besides the peak, every ``series_every_s``
    the group's RSS is kept as a point of :meth:`rss_series_mb`, so a run shows whether memory
    levels off (an allocator's high-water mark) or keeps climbing (a leak).
    """

    def __init__(self, groups: dict[str, Iterable[int]], interval_s: float = 0.2, series_every_s: float = 10.0) -> None:
        self.groups = {name: [psutil.Process(pid) for pid in pids] for name, pids in groups.items()}
        self.interval_s = interval_s
        self.series_every_s = series_every_s
        self.series: list[tuple[float, dict[str, int]]] = []
        self._started = time.monotonic()
        self.peak_rss: dict[str, int] = dict.fromkeys(self.groups, 0)
        self.peak_rss_each: dict[str, int] = {}
        self._cpu_last: dict[int, float] = {}
        self._cpu_first: dict[int, float] = {}
        self._owner: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="bench-monitor")

    def _members(self) -> Iterable[tuple[str, psutil.Process]]:
        for name, procs in self.groups.items():
            for proc in procs:
                yield name, proc
                with contextlib.suppress(psutil.Error):
                    for child in proc.children(recursive=True):
                        yield name, child

    def _sample(self, *, last: bool = False) -> None:
        totals: dict[str, int] = dict.fromkeys(self.groups, 0)
        for name, proc in self._members():
            with contextlib.suppress(psutil.Error):
                rss = int(proc.memory_info().rss)
                cpu = _cpu(proc)
                self._cpu_first.setdefault(proc.pid, cpu)
                self._cpu_last[proc.pid] = cpu
                self._owner[proc.pid] = name
                totals[name] += rss
                key = f"{name}:{proc.pid}"
                self.peak_rss_each[key] = max(self.peak_rss_each.get(key, 0), rss)
        for name, rss in totals.items():
            self.peak_rss[name] = max(self.peak_rss[name], rss)
        elapsed_s = time.monotonic() - self._started
        if last or not self.series or elapsed_s - self.series[-1][0] >= self.series_every_s:
            self.series.append((elapsed_s, totals))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def start(self) -> Monitor:
        self._started = time.monotonic()
        self._sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sample(last=True)

    def cpu_seconds(self) -> dict[str, float]:
        out: dict[str, float] = dict.fromkeys(self.groups, 0.0)
        for pid, last in self._cpu_last.items():
            out[self._owner[pid]] += last - self._cpu_first[pid]
        return {k: round(v, 3) for k, v in out.items()}

    def rss_series_mb(self, names: Iterable[str]) -> dict[str, list[list[float]]]:
        """Per group in ``names``: ``[seconds since start, RSS MB]`` points."""
        return {name: [[round(t, 1), round(totals[name] / 2**20, 1)] for t, totals in self.series] for name in names}

    def peak_rss_mb(self) -> dict[str, float]:
        return {k: round(v / 2**20, 1) for k, v in self.peak_rss.items()}
