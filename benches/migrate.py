"""End-to-end migrate benchmark: the fast Scan server into PostgreSQL with 1, 2 and 4 workers.

    .venv/bin/python -m benches.migrate [--items 200000] [--workers 1,2,4] [--latency 0] [--dsn DSN]

Each run loads the same generated table into fresh schemas with the real command
(`podyn-fast migrate` as a subprocess) and is checked: row count, distinct keys and the sum of a
numeric attribute must equal the source's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg import sql

from benches import machine
from podyn_fast.embedded.postgres import EmbeddedPostgres
from tests.servers.scan import TYPICAL_KEYS, ScanServer, TableSpec, typical_item

TABLE = "bench"


def expected_sum(items: int) -> Decimal:
    """The sum of every item's ``balance``, computed from the generator (the source of truth)."""
    total = Decimal(0)
    for i in range(items):
        amount = orjson.loads(typical_item(i)).get("balance")
        if amount is not None:
            total += Decimal(amount["N"])
    return total


def run_once(dsn: str, endpoint: str, workers: int, segments: int, run: int) -> dict[str, Any]:
    target, state_schema = f"bench_{run}", f"bench_{run}_state"
    with psycopg.connect(dsn, autocommit=True) as conn:
        for s in (target, state_schema):
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(s)))
    exe = str(Path(sys.executable).parent / "podyn-fast")
    cmd = [
        exe,
        "migrate",
        "--postgres-url",
        dsn,
        "--endpoint-url",
        endpoint,
        "--region",
        "us-east-1",
        "--table",
        TABLE,
        "--workers",
        str(workers),
        "--segments",
        str(segments),
        "--target-schema",
        target,
        "--state-schema",
        state_schema,
        "--no-progress",
    ]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"migrate failed ({proc.returncode}):\n{proc.stderr}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*), count(DISTINCT (pk, sk)), coalesce(sum(balance), 0) FROM {}.{}").format(
                sql.Identifier(target), sql.Identifier(TABLE)
            )
        ).fetchone()
        assert row is not None
        for s in (target, state_schema):
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(s)))
    return {
        "workers": workers,
        "seconds": seconds,
        "client_cpu_seconds": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "rows": int(row[0]),
        "distinct_keys": int(row[1]),
        "balance_sum": str(row[2]),
        "command": " ".join(c if c != dsn else "<dsn>" for c in cmd),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--segments", type=int, default=16)
    ap.add_argument("--latency", type=float, default=0.0, help="seconds added to every Scan request")
    ap.add_argument("--dsn", default=os.environ.get("PODYN_TEST_DSN"))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)

    server = ScanServer([TableSpec(TABLE, TYPICAL_KEYS, typical_item, args.items)])
    endpoint = server.start()
    server.latency = args.latency
    server.warm(TABLE)
    source_bytes = server.table_size(TABLE)
    want_sum = expected_sum(args.items)
    pg = None
    dsn = args.dsn
    if not dsn:
        pg = EmbeddedPostgres()
        dsn = pg.start()
    try:
        with psycopg.connect(dsn) as conn:
            pg_version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        runs = [run_once(dsn, endpoint, int(w), args.segments, n) for n, w in enumerate(args.workers.split(","))]
    finally:
        server.stop()
        if pg:
            pg.stop()

    lines = [
        f"machine: {machine.describe(pg_version)}",
        f"command: .venv/bin/python -m benches.migrate {' '.join(argv if argv is not None else sys.argv[1:])}",
        f"source: {args.items:,} typical items, {source_bytes / 1e6:.1f} MB of item JSON, "
        f"{args.segments} segments, {args.latency * 1000:.0f} ms added per Scan request",
        "",
        "| workers | seconds | items/s | MB/s | client CPU s | correct |",
        "|---|---|---|---|---|---|",
    ]
    ok = True
    for r in runs:
        correct = r["rows"] == r["distinct_keys"] == args.items and Decimal(r["balance_sum"]) == want_sum
        ok &= correct
        lines.append(
            f"| {r['workers']} | {r['seconds']:.1f} | {args.items / r['seconds']:,.0f} | "
            f"{source_bytes / r['seconds'] / 1e6:.1f} | {r['client_cpu_seconds']:.1f} | {correct} |"
        )
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "migrate.json").write_text(json.dumps({"runs": runs, "items": args.items}, indent=2) + "\n")
    (args.out / "migrate.md").write_text("# migrate benchmark\n\n" + "\n".join(lines) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
