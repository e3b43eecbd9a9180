"""Export against Scan: the same items loaded by `migrate --export` (a DynamoDB export in moto's
S3, written as DynamoDB lays it out) and by `migrate` (the fast Scan server), in one run, next to
PostgreSQL's own ceiling (server-side COPY of the same rows).

    .venv/bin/python -m benches.export [--items 200000] [--workers 1,2] [--files 16] [--dsn DSN]

Runs alternate (Scan, export, Scan, export…) so that the machine's noise falls on both. Each run
is checked: row count, distinct keys and the sum of a numeric attribute must equal the source's.
moto's S3 answers on localhost with no latency: an S3 far friendlier than AWS's on latency, and
far costlier in CPU (moto is Python), which is counted as the export's source CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import orjson

from benches import baselines, machine
from benches.datasets import scan_pages
from benches.migrate import TABLE, check, expected_sum, run_once
from podyn_fast import _core
from podyn_fast.demo.emulator import LocalDynamo
from tests.servers.exports import write_export
from tests.servers.scan import TYPICAL_KEYS, ScanServer, TableSpec, typical_item


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--files", type=int, default=16, help="data files in the export (and Scan segments)")
    ap.add_argument("--dsn", default=os.environ.get("PODYN_TEST_DSN"))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    items = [orjson.loads(typical_item(i)) for i in range(args.items)]
    runs, ceiling, ceiling_ok, pg_version = _measure(args, items)
    lines, ok = _report(args, items, runs, ceiling, pg_version, argv)
    ok &= ceiling_ok
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"runs": runs, "ceiling_seconds": ceiling}
    (args.out / "export.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    (args.out / "export.md").write_text("# export benchmark\n\n" + "\n".join(lines) + "\n")
    return 0 if ok else 1


def _measure(args: argparse.Namespace, items: list[Any]) -> tuple[list[dict[str, Any]], float, bool, str]:
    """Scan and export runs, alternating, then the ceiling: (runs, ceiling seconds, ceiling exact, PG version)."""
    scan = ScanServer([TableSpec(TABLE, TYPICAL_KEYS, typical_item, args.items)])
    endpoint = scan.start()
    scan.warm(TABLE)
    with tempfile.TemporaryDirectory(prefix="podyn-bench-s3-") as tmp:
        s3_server = LocalDynamo(Path(tmp) / "moto.log")
        s3_endpoint = s3_server.start()
        s3 = boto3.client(
            "s3", endpoint_url=s3_endpoint, region_name="us-east-1",
            config=botocore.config.Config(s3={"addressing_style": "path"}),
        )  # fmt: skip
        s3.create_bucket(Bucket="bench")
        written = write_export(
            s3, "bench", "exports", TABLE, items, partition_key="pk", files=args.files, empty_files=0
        )
        moto_pid = s3_server.process.pid if s3_server.process else None
        try:
            with machine.postgres(args.dsn) as pg:
                order = scan.scan_order(TABLE)
                return _runs(args, [items[i] for i in order], endpoint, pg, written.url, s3_endpoint, moto_pid)
        finally:
            scan.stop()
            s3_server.stop()


def _runs(
    args: argparse.Namespace,
    items: list[Any],
    endpoint: str,
    pg: machine.Postgres,
    export_url: str,
    s3_endpoint: str,
    moto_pid: int | None,
) -> tuple[list[dict[str, Any]], float, bool, str]:
    """Scan and export runs, alternating, then the ceiling (``items`` in the order a Scan serves
    them, the order the ceiling loads them in)."""
    dsn, postmaster = pg.dsn, pg.postmaster
    runs: list[dict[str, Any]] = []
    export_args = ["--export", export_url, "--s3-endpoint-url", s3_endpoint]
    for n, w in enumerate(args.workers.split(",")):
        runs.append(run_once(dsn, endpoint, int(w), args.files, 2 * n, postmaster) | {"source": "Scan"})
        run = run_once(dsn, endpoint, int(w), None, 2 * n + 1, postmaster, extra=export_args, source_pid=moto_pid)
        runs.append(run | {"source": "export"})
    layout = _core.Layout(TYPICAL_KEYS, runs[-1]["columns"])
    pages = scan_pages(orjson.dumps(item) for item in items)
    ceiling = baselines.ceiling(dsn, "bench_ceiling", TABLE, layout, pages, 1)
    rows = check(dsn, "bench_ceiling")
    return runs, ceiling, rows[0] == rows[1] == args.items, pg.version


def _report(
    args: argparse.Namespace,
    items: list[Any],
    runs: list[dict[str, Any]],
    ceiling: float,
    pg_version: str,
    argv: Sequence[str] | None,
) -> tuple[list[str], bool]:
    per_m = 1e6 / args.items
    want_sum = expected_sum(args.items)
    lines = [
        f"machine: {machine.describe(pg_version)}",
        f"command: .venv/bin/python -m benches.export {' '.join(argv if argv is not None else sys.argv[1:])}",
        f"source: {args.items:,} typical items; Scan: {args.files} segments of the fast Scan server; export: "
        f"{args.files} gzip data files in moto's S3 ({sum(len(orjson.dumps(i)) for i in items) / 1e6:.0f} MB of JSON)",
        "",
        "| source | workers | seconds | items/s | of the ceiling | client CPU s / M items | PostgreSQL CPU s / M items "
        "| source CPU s / M items | correct |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ok = True
    for r in runs:
        correct = r["rows"] == r["distinct_keys"] == args.items and Decimal(r["balance_sum"]) == want_sum
        ok &= correct
        pg_cpu = r["postgres_cpu_seconds"]
        lines.append(
            f"| {r['source']} | {r['workers']} | {r['seconds']:.1f} | {args.items / r['seconds']:,.0f} | "
            f"{ceiling / r['seconds']:.2f} | {r['client_cpu_seconds'] * per_m:.1f} | "
            f"{pg_cpu * per_m if pg_cpu is not None else float('nan'):.1f} | {r['source_cpu_seconds'] * per_m:.1f} | "
            f"{correct} |"
        )
    lines.append(
        f"| ceiling (server-side COPY, 1 session) | - | {ceiling:.1f} | {args.items / ceiling:,.0f} | 1.00 "
        "| - | - | - | - |"
    )
    for w in args.workers.split(","):
        by = {r["source"]: r for r in runs if str(r["workers"]) == w}
        lines.append(
            f"\n{w} worker(s): export / Scan items/s {by['Scan']['seconds'] / by['export']['seconds']:.2f}, "
            f"client CPU {by['export']['client_cpu_seconds'] / by['Scan']['client_cpu_seconds']:.2f}"
        )
    return lines, ok


if __name__ == "__main__":
    sys.exit(main())
