"""PostgreSQL's side at scale: the rate of a load over time as the table grows well past
shared_buffers, with the primary key in place during the load against built after it.

    .venv/bin/python -m benches.scale [--items 5000000] [--dataset typical] [--workers 2] [--dsn DSN]

Each load is `podyn-fast migrate` of the same table (rows in the order a Scan serves them: the hash
order of the partition key) into a fresh schema of a durable server (machine.DURABLE: 128 MB of
shared_buffers, fsync and full-page writes on), its committed items sampled every half second:
the rate of each tenth of the load, and what the end adds (the deferred key's build, the
secondary indexes). Every load is checked: rows, distinct keys and the sum of a numeric attribute.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from benches import machine
from benches.migrate import DATASETS, run_once, serve

TENTHS = 10
CHOICES = {"primary key during the load": (), "primary key after the load": ("--defer-primary-key",)}


def tenths(timeline: Sequence[tuple[float, int]], items: int) -> tuple[list[float], float]:
    """Items per second in each tenth of the load, and when the last item was committed. The load
    starts at the last sample that found nothing committed (the command's start-up and planning
    are not the first tenth's)."""
    start = max((t for t, n in timeline if n == 0), default=0.0)
    marks = [start] + [_reached(timeline, items * k / TENTHS) for k in range(1, TENTHS + 1)]
    rates = [(items / TENTHS) / max(marks[k + 1] - marks[k], 1e-9) for k in range(TENTHS)]
    return rates, marks[-1]


def _reached(timeline: Sequence[tuple[float, int]], goal: float) -> float:
    """When the items committed first reached ``goal``, interpolated between two samples."""
    before_t, before_n = 0.0, 0
    for t, n in timeline:
        if n >= goal:
            share = (goal - before_n) / (n - before_n) if n > before_n else 1.0
            return before_t + share * (t - before_t)
        before_t, before_n = t, n
    raise ValueError(f"the load never reached {goal:,.0f} items")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=5_000_000)
    ap.add_argument("--dataset", choices=sorted(DATASETS), default="typical")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--segments", type=int, default=32)
    ap.add_argument("--dsn", default=os.environ.get("PODYN_TEST_DSN"))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)
    server, source_bytes, want_sum = serve(args.dataset, args.items)
    endpoint = server.endpoint
    runs: list[dict[str, Any]] = []
    try:
        with machine.postgres(args.dsn) as pg:
            for n, (name, extra) in enumerate(CHOICES.items()):
                run = run_once(
                    pg.dsn, endpoint, args.workers, args.segments, n, pg.postmaster, extra=extra, timeline=True
                )
                runs.append(run | {"name": name})
            pg_version = pg.version
    finally:
        server.stop()

    lines = [
        f"machine: {machine.describe(pg_version)}",
        f"postgresql settings: {machine.DURABLE if not args.dsn else 'the given server'}",
        f"command: .venv/bin/python -m benches.scale {' '.join(argv if argv is not None else sys.argv[1:])}",
        f"source: {args.items:,} {args.dataset} items in Scan order, {source_bytes / 1e6:,.0f} MB of item JSON, "
        f"{args.segments} segments, {args.workers} workers",
        "",
        "| load | " + " | ".join(f"tenth {k + 1}" for k in range(TENTHS)) + " | last ÷ first tenth "
        "| loaded after s | end s (key, indexes) | total s | items/s overall | PostgreSQL CPU s / M items | correct |",
        "|---|" + "---|" * (TENTHS + 7),
    ]
    ok = True
    for r in runs:
        rates, loaded_at = tenths(r["timeline"], args.items)
        correct = r["rows"] == r["distinct_keys"] == args.items and Decimal(r["balance_sum"]) == want_sum
        ok &= correct
        pg_cpu = r["postgres_cpu_seconds"]
        r |= {"tenths_items_per_s": rates, "loaded_at": loaded_at}
        lines.append(
            f"| {r['name']} | "
            + " | ".join(f"{x:,.0f}" for x in rates)
            + f" | {rates[-1] / rates[0]:.2f} | {loaded_at:.1f} | {r['seconds'] - loaded_at:.1f} | {r['seconds']:.1f} "
            f"| {args.items / r['seconds']:,.0f} | "
            f"{pg_cpu * 1e6 / args.items if pg_cpu is not None else float('nan'):.1f} | {correct} |"
        )
    first, second = runs
    lines.append(
        f"\nprimary key after the load / during it, total time: {second['seconds'] / first['seconds']:.2f} "
        "(below 1: deferring is faster)"
    )
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale.json").write_text(json.dumps({"runs": runs}, indent=2, default=str) + "\n")
    (args.out / "scale.md").write_text("# migrate at scale\n\n" + "\n".join(lines) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
