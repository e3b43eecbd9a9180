"""Memory benchmark: a worker's peak RSS must not grow with the table.

    .venv/bin/python -m benches.memory [--items 1000000,4000000] [--workers 2]

Loads tables of each size from the fast Scan server with the real `podyn-fast migrate` (worker
processes, so each worker's own peak is measured) and prints the peak RSS of the largest worker
and of the coordinator, with the ratio between the largest and the smallest table. Every load is
checked like the migrate benchmark's (rows, distinct keys, sum of a numeric attribute).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

from benches import machine
from benches.migrate import TABLE, expected_sum, run_once
from tests.servers.scan import TYPICAL_KEYS, ScanServer, TableSpec, typical_item


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", default="1000000,4000000", help="table sizes, comma-separated")
    ap.add_argument("--workers", type=int, default=2, help="loader processes (at least 2: one is a thread)")
    ap.add_argument("--segments", type=int, default=16)
    ap.add_argument("--dsn", default=os.environ.get("PODYN_TEST_DSN"))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)
    if args.workers < 2:
        ap.error("--workers must be at least 2: a single worker runs in the coordinator's process")
    sizes = [int(s) for s in args.items.split(",")]

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    runs = []
    with machine.postgres(args.dsn) as pg:
        pg_version = pg.version
        for n, items in enumerate(sizes):
            # One server per size: it caches every item's bytes, and only one table at a time.
            server = ScanServer([TableSpec(TABLE, TYPICAL_KEYS, typical_item, items)])
            endpoint = server.start()
            try:
                server.warm(TABLE)
                run = run_once(pg.dsn, endpoint, args.workers, args.segments, n, pg.postmaster)
            finally:
                server.stop()
            run["items"] = items
            run["correct"] = run["rows"] == run["distinct_keys"] == items and Decimal(
                run["balance_sum"]
            ) == expected_sum(items, typical_item)
            runs.append(run)

    lines = [
        f"machine: {machine.describe(pg_version)}",
        f"command: .venv/bin/python -m benches.memory {' '.join(argv if argv is not None else sys.argv[1:])}",
        "",
        "| items | workers | seconds | peak RSS of the largest worker (MiB) | of the coordinator (MiB) | correct |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['items']:,} | {r['workers']} | {r['seconds']:.1f} | {r['peak_rss_worker_mib']:.0f} | "
            f"{r['peak_rss_coordinator_mib']:.0f} | {r['correct']} |"
        )
    growth = runs[-1]["peak_rss_worker_mib"] / runs[0]["peak_rss_worker_mib"]
    lines.append(
        f"\nworker peak RSS, {sizes[-1]:,} items / {sizes[0]:,} items: {growth:.2f} (flat is 1.00; goal within 1.20)"
    )
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "memory.json").write_text(json.dumps({"runs": runs}, indent=2, default=str) + "\n")
    (args.out / "memory.md").write_text("# memory benchmark\n\n" + "\n".join(lines) + "\n")
    return 0 if all(r["correct"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
