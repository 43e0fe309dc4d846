"""``python -m bench <scenario> [--db sqlite|postgresql] [--emails N] ...``"""

from __future__ import annotations

import argparse
import os
import time

from bench.runner import SCENARIOS, run_scenario


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description="mailpipe benchmarks and their peers")
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--emails", type=int, default=None, help="emails (scenario default when omitted)")
    parser.add_argument("--mailboxes", type=int, default=None, help="sender mailboxes to spread over")
    parser.add_argument("--rate", type=float, default=50.0, help="latency: offered emails/s")
    parser.add_argument("--duration", type=float, default=60.0, help="latency: seconds of offered load")
    parser.add_argument("--small", type=int, default=1000, help="backlog-memory: the small backlog")
    parser.add_argument("--window", type=float, default=None, help="backlog-memory: stop each drain after S seconds")
    parser.add_argument("--profile", type=float, default=0.0, help="throughput: py-spy each role for S seconds")
    parser.add_argument(
        "--trace-memory",
        default="",
        metavar="ROLES",
        help="comma-separated roles to run under tracemalloc; snapshots go to bench/results/tracemem-*/",
    )
    parser.add_argument("--trace-interval", type=float, default=60.0, help="seconds between tracemalloc snapshots")
    args = parser.parse_args()
    if args.trace_memory:  # read by bench.infra when it starts the roles
        os.environ["BENCH_TRACE_MEMORY"] = args.trace_memory
        os.environ["BENCH_TRACE_MEMORY_DIR"] = time.strftime("tracemem-%Y%m%dT%H%M%S")
        os.environ["BENCH_TRACE_MEMORY_INTERVAL_S"] = str(args.trace_interval)
    run_scenario(
        args.scenario,
        args.db,
        emails=args.emails,
        mailboxes=args.mailboxes,
        rate=args.rate,
        duration=args.duration,
        small=args.small,
        window=args.window,
        profile=args.profile,
    )


if __name__ == "__main__":
    main()
