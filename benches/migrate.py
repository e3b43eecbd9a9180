"""End-to-end migrate benchmark: the fast Scan server into PostgreSQL with 1, 2 and 4 workers,
next to PostgreSQL's own ceiling (server-side COPY of the same rows) and the Python way.

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
import threading
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg import sql

from benches import baselines, machine, procs
from benches.datasets import large_item, scan_pages, wide_item
from podyn_fast import _core, state
from tests.servers.scan import TYPICAL_KEYS, ScanServer, TableSpec, rich_item, typical_item

TABLE = "bench"


DATASETS = {"typical": typical_item, "rich": rich_item, "wide": wide_item, "large": large_item}


def expected_sum(items: int, generate: Callable[[int], bytes] = typical_item) -> Decimal:
    """The sum of every item's ``balance``, computed from the generator (the source of truth)."""
    total = Decimal(0)
    for i in range(items):
        amount = orjson.loads(generate(i)).get("balance")
        if amount is not None:
            total += Decimal(amount["N"])
    return total


def serve(dataset: str, items: int) -> tuple[ScanServer, int, Decimal]:
    """The fast Scan server with the benchmark's table of ``items`` items of ``dataset``, running and
    generated: (server, the table's bytes of JSON, the sum of its ``balance`` to check loads by)."""
    # The local servers check no signature, but clients sign: any credentials do.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    generate = DATASETS[dataset]
    server = ScanServer([TableSpec(TABLE, TYPICAL_KEYS, generate, items)])
    server.start()
    server.warm(TABLE)
    return server, server.table_size(TABLE), expected_sum(items, generate)


def check(dsn: str, schema: str) -> tuple[int, int, str]:
    """Rows, distinct keys and the sum of ``balance`` in ``schema``'s table."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*), count(DISTINCT (pk, sk)), coalesce(sum(balance), 0) FROM {}.{}").format(
                sql.Identifier(schema), sql.Identifier(TABLE)
            )
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), str(row[2])


def run_once(
    dsn: str,
    endpoint: str,
    workers: int,
    segments: int | None,
    run: int,
    postmaster: int | None,
    *,
    extra: Sequence[str] = (),
    source_pid: int | None = None,
    timeline: bool = False,
) -> dict[str, Any]:
    """One `podyn-fast migrate` of the table, measured: ``extra`` arguments (``--export …``, then
    no ``--segments``), and the source's CPU from ``source_pid`` (else this process's: the Scan
    server runs in it). With ``timeline``, the items committed are sampled every half second:
    ``timeline`` in the result is [(seconds since the start, items)]."""
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
        *(["--segments", str(segments)] if segments is not None else []),
        *extra,
        "--target-schema",
        target,
        "--state-schema",
        state_schema,
        "--no-progress",
    ]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    # This process runs the Scan server (and the RSS sampler): what the source costs the machine.
    source_before = _source_cpu(source_pid)
    pg_before = procs.cpu_seconds_with_reaped_children(postmaster) if postmaster else None
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with procs.PeakRss(proc.pid) as rss, _Committed(dsn, state_schema, t0, timeline) as committed:
        _, stderr = proc.communicate()
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    source_after = _source_cpu(source_pid)
    if proc.returncode != 0:
        raise SystemExit(f"migrate failed ({proc.returncode}):\n{stderr}")
    # The backends' CPU reaches the postmaster's counters once they exit, with the connections.
    time.sleep(0.3)
    pg_after = procs.cpu_seconds_with_reaped_children(postmaster) if postmaster else None
    row = check(dsn, target)
    with psycopg.connect(dsn, autocommit=True) as conn:
        table = state.get_table(conn, state_schema, TABLE)
        assert table is not None
        columns = state.registry(conn, state_schema, TABLE)
        for s in (target, state_schema):
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(s)))
    return {
        "columns": columns,
        "workers": workers,
        "seconds": seconds,
        "client_cpu_seconds": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "source_cpu_seconds": source_after - source_before,
        "postgres_cpu_seconds": pg_after - pg_before if pg_before is not None and pg_after is not None else None,
        "peak_rss_process_mib": rss.largest_kib / 1024,
        "peak_rss_worker_mib": rss.children_peak_kib / 1024 if workers > 1 else None,
        "peak_rss_coordinator_mib": rss.peaks_kib.get(proc.pid, 0) / 1024,
        "peak_rss_all_mib": rss.total_kib / 1024,
        "rows": int(row[0]),
        "distinct_keys": int(row[1]),
        "balance_sum": str(row[2]),
        "command": " ".join(c if c != dsn else "<dsn>" for c in cmd),
        "timeline": committed.samples,
    }


class _Committed(threading.Thread):
    """Samples the items a load has committed, every 0.2 s, from its state schema, and once more
    when the command has exited (its last commit may fall after the last sample)."""

    def __init__(self, dsn: str, state_schema: str, t0: float, enabled: bool) -> None:
        super().__init__(daemon=True)
        self.dsn, self.state_schema, self.t0, self.enabled = dsn, state_schema, t0, enabled
        self.samples: list[tuple[float, int]] = []
        self._done = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while True:
                stopping = self._done.wait(0.2)
                try:
                    items = state.progress(conn, self.state_schema, TABLE).items
                except psycopg.errors.UndefinedTable:
                    items = 0
                if not self.samples or items > self.samples[-1][1]:
                    self.samples.append((time.perf_counter() - self.t0, items))
                if stopping:
                    return

    def __enter__(self) -> _Committed:
        if self.enabled:
            self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        if self.enabled:
            self.join()


def _source_cpu(pid: int | None) -> float:
    if pid is not None:
        return procs.cpu_seconds_with_reaped_children(pid) or 0.0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--dataset", choices=sorted(DATASETS), default="typical")
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--segments", type=int, default=16)
    ap.add_argument("--latency", type=float, default=0.0, help="seconds added to every Scan request")
    ap.add_argument("--dsn", default=os.environ.get("PODYN_TEST_DSN"))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument(
        "--baselines",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure the ceiling (server-side COPY of the same rows) and the Python way",
    )
    args = ap.parse_args(argv)

    server, source_bytes, want_sum = serve(args.dataset, args.items)
    endpoint = server.endpoint
    server.latency = args.latency
    try:
        with machine.postgres(args.dsn) as pg:
            dsn, pg_version = pg.dsn, pg.version
            runs = [
                run_once(dsn, endpoint, int(w), args.segments, n, pg.postmaster)
                for n, w in enumerate(args.workers.split(","))
            ]
            others = _baselines(dsn, server, args, runs) if args.baselines else []
            alone = baselines.server_alone(endpoint, TABLE, args.segments, threads=2)
    finally:
        server.stop()

    lines = [
        f"machine: {machine.describe(pg_version)}",
        f"command: .venv/bin/python -m benches.migrate {' '.join(argv if argv is not None else sys.argv[1:])}",
        f"source: {args.items:,} {args.dataset} items, {source_bytes / 1e6:.1f} MB of item JSON, "
        f"{args.segments} segments, {args.latency * 1000:.0f} ms added per Scan request",
        "",
        "| workers | seconds | items/s | MB/s | client CPU s / M items | PostgreSQL CPU s / M items "
        "| client ÷ PostgreSQL CPU | Scan server CPU s / M items | peak RSS of one process / all (MiB) | correct |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    ok = _rows(lines, args, runs, others, source_bytes, want_sum)
    lines.append(
        f"\nthe Scan server alone (raw pages, 2 threads, no PostgreSQL): {alone[1] / alone[0]:,.0f} items/s, "
        f"{alone[2] / alone[0] / 1e6:.0f} MB/s"
    )
    lines.append(
        "\nAll on one machine: podyn-fast, PostgreSQL and the Scan server share its cores (the ceiling's "
        "rows were encoded beforehand, and it pays for no source)."
    )
    best = max(args.items / r["seconds"] for r in runs)
    for o in others:
        lines.append(f"\npodyn-fast (best) / {o['name']}: {best / (o['items'] / o['seconds']):.2f}")
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "migrate.json").write_text(
        json.dumps({"runs": runs, "baselines": others, "items": args.items}, indent=2, default=str) + "\n"
    )
    (args.out / "migrate.md").write_text("# migrate benchmark\n\n" + "\n".join(lines) + "\n")
    return 0 if ok else 1


def _rows(
    lines: list[str],
    args: argparse.Namespace,
    runs: list[dict[str, Any]],
    others: list[dict[str, Any]],
    source_bytes: int,
    want_sum: Decimal,
) -> bool:
    """Append a table row per run and baseline; True when every one loaded the source exactly."""
    ok = True
    for r in runs:
        correct = r["rows"] == r["distinct_keys"] == args.items and Decimal(r["balance_sum"]) == want_sum
        ok &= correct
        per_m = 1e6 / args.items
        pg_cpu = r["postgres_cpu_seconds"]
        ratio = r["client_cpu_seconds"] / pg_cpu if pg_cpu else float("nan")
        lines.append(
            f"| {r['workers']} | {r['seconds']:.1f} | {args.items / r['seconds']:,.0f} | "
            f"{source_bytes / r['seconds'] / 1e6:.1f} | {r['client_cpu_seconds'] * per_m:.1f} | "
            f"{pg_cpu * per_m if pg_cpu is not None else float('nan'):.1f} | {ratio:.2f} | "
            f"{r['source_cpu_seconds'] * per_m:.1f} | "
            f"{r['peak_rss_process_mib']:.0f} / {r['peak_rss_all_mib']:.0f} | {correct} |"
        )
    for o in others:
        correct = o["rows"] == o["distinct_keys"] == o["items"] and (
            o["items"] != args.items or Decimal(o["balance_sum"]) == want_sum
        )
        ok &= correct
        lines.append(
            f"| {o['name']} | {o['seconds']:.1f} | {o['items'] / o['seconds']:,.0f} | "
            f"{source_bytes * o['items'] / args.items / o['seconds'] / 1e6:.1f} | - | - | - | - | - | {correct} |"
        )
    return ok


def _baselines(
    dsn: str, server: ScanServer, args: argparse.Namespace, runs: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The ceiling and the Python way on the same source, with the layout podyn-fast ended with;
    the ceiling loads the rows in the order a Scan serves them (the hash order of the partition key:
    its inserts land where podyn-fast's do in the primary key's btree)."""
    endpoint = server.endpoint
    layout = _core.Layout(TYPICAL_KEYS, runs[-1]["columns"])
    generate = DATASETS[args.dataset]
    pages = scan_pages(generate(i) for i in server.scan_order(TABLE))
    out: list[dict[str, Any]] = []

    def record(name: str, seconds: float, items: int, schema: str) -> None:
        rows, distinct, total = check(dsn, schema)
        out.append({"name": name, "seconds": seconds, "items": items, "rows": rows, "distinct_keys": distinct,
                    "balance_sum": total})  # fmt: skip
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))

    for sessions in (1, 2):
        seconds = baselines.ceiling(dsn, "bench_ceiling", TABLE, layout, pages, sessions)
        record(f"ceiling, {sessions} session(s)", seconds, args.items, "bench_ceiling")
    seconds, _ = baselines.python_way(
        endpoint, dsn, TABLE, "bench_python", TABLE, layout, segments=args.segments, workers=2
    )
    record("Python way, 2 processes", seconds, args.items, "bench_python")
    if args.latency > 0:
        # Podyn's own algorithm: one sequential Scan, 100 items per request.
        seconds, _ = baselines.python_way(
            endpoint, dsn, TABLE, "bench_podyn", TABLE, layout, segments=1, workers=1, limit=100
        )
        record("Podyn's algorithm (1 segment, Limit 100)", seconds, args.items, "bench_podyn")
    return out


if __name__ == "__main__":
    sys.exit(main())
