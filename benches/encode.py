"""Encoder benchmark: Scan pages to binary COPY rows on one core, against the Python way.

Two datasets, the items the migrate benchmark loads (tests/servers/scan.py): ``typical`` (12
attributes, ASCII) and ``rich`` (non-ASCII text, escapes, 38-digit and exponent numbers, lists of
nested maps, sets, binary). The Python way is what a user would write: ``orjson.loads`` of the
page, boto3's ``TypeDeserializer`` per attribute, and psycopg's binary ``Copy.write_row`` (into a
file, so no server time is counted on either side). Both outputs are then loaded into PostgreSQL
and compared row for row (sets as sets), so the speed-up is only reported for identical results.

    .venv/bin/python -m benches.encode [--items 200000] [--repeat 5] [--dsn DSN]   (from the repository root)
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import psycopg
from boto3.dynamodb.types import Binary, TypeDeserializer
from psycopg import sql
from psycopg.copy import Copy, FileWriter
from psycopg.types.json import Jsonb

from benches import machine
from benches.datasets import scan_pages
from podyn_fast import _core
from podyn_fast.embedded.postgres import EmbeddedPostgres
from podyn_fast.postgres import ddl
from podyn_fast.postgres.copy import copy_rows
from tests.servers.scan import TYPICAL_KEYS, rich_item, typical_item

DATASETS = {"typical": typical_item, "rich": rich_item}


def full_layout(pages: Sequence[bytes]) -> _core.Layout:
    """The layout after every page's attributes have been registered (as a load would end up)."""
    layout = _core.Layout(TYPICAL_KEYS, _core.key_columns(TYPICAL_KEYS))
    for page in pages:
        unknown = layout.encode_scan_page(page).unknown
        if unknown:
            layout = layout.with_columns(layout.plan_columns(list(unknown)))
    return layout


def time_runs(fn: Callable[[], object], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def encode_rust(layout: _core.Layout, pages: Sequence[bytes]) -> list[bytes]:
    out = []
    for page in pages:
        encoded = layout.encode_scan_page(page)
        assert not encoded.unknown and not encoded.rejects
        out.append(encoded.rows)
    return out


def _to_python(value: Any) -> Any:
    """What a user does to hand deserialized values to psycopg."""
    if isinstance(value, set):
        return sorted(value)
    if isinstance(value, Binary):
        return bytes(value.value)
    if isinstance(value, (dict, list)):
        # json cannot write Decimal; users reach for float (exact for these values, ≤ 15 digits).
        return Jsonb(value, dumps=lambda v: json.dumps(v, default=float))
    return value


def _as_botocore(typed: dict[str, Any]) -> dict[str, Any]:
    """A typed value as botocore hands it to boto3's deserializer: binary decoded from base64."""
    ((tag, value),) = typed.items()
    if tag == "B":
        return {tag: base64.b64decode(value)}
    if tag == "BS":
        return {tag: [base64.b64decode(v) for v in value]}
    if tag == "L":
        return {tag: [_as_botocore(v) for v in value]}
    if tag == "M":
        return {tag: {k: _as_botocore(v) for k, v in value.items()}}
    return typed


def encode_python(cursor: psycopg.Cursor[Any], layout: _core.Layout, pages: Sequence[bytes]) -> bytes:
    deserializer = TypeDeserializer()
    columns = layout.columns
    buf = io.BytesIO()
    with Copy(cursor, binary=True, writer=FileWriter(buf)) as copy:
        copy.set_types([ty for _, ty, _ in columns])
        for page in pages:
            for item in orjson.loads(page)["Items"]:
                values = {k: deserializer.deserialize(_as_botocore(v)) for k, v in item.items()}
                copy.write_row([_to_python(values.get(attr)) for attr, _, _ in columns])
    return buf.getvalue()


def same_rows(
    conn: psycopg.Connection[Any], layout: _core.Layout, ours: list[bytes], theirs: bytes
) -> tuple[bool, int]:
    """Load both outputs into two tables and compare them as multisets of rows. Sets are compared
    as sets: DynamoDB gives them no order, and the Python way sorts them."""
    columns = [
        sql.SQL("(SELECT array_agg(e ORDER BY e) FROM unnest({c}) e)" if ty.endswith("[]") else "{c}").format(
            c=sql.Identifier(name)
        )
        for name, (_, ty, _) in zip(layout.column_names, layout.columns, strict=True)
    ]
    with conn.cursor() as cur:
        cur.execute("DROP SCHEMA IF EXISTS bench_encode CASCADE; CREATE SCHEMA bench_encode")
        for table in ("ours", "python"):
            cur.execute(ddl.create_table("bench_encode", table, layout))
        copy_rows(cur, "bench_encode", "ours", layout.column_names, ours)
        stmt = sql.SQL("COPY bench_encode.python ({}) FROM STDIN (FORMAT binary)").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in layout.column_names)
        )
        with cur.copy(stmt) as copy:
            copy.write(theirs)
        rows = {
            t: sql.SQL("SELECT {} FROM bench_encode.{}").format(sql.SQL(", ").join(columns), sql.Identifier(t))
            for t in ("ours", "python")
        }
        cur.execute(
            sql.SQL(
                "SELECT (SELECT count(*) FROM bench_encode.ours),"
                " (SELECT count(*) FROM ({ours} EXCEPT ALL {python}) a)"
                " + (SELECT count(*) FROM ({python} EXCEPT ALL {ours}) b)"
            ).format(**rows)
        )
        n, diff = cur.fetchone()  # type: ignore[misc]
        cur.execute("DROP SCHEMA bench_encode CASCADE")
    return diff == 0, n


def measure(name: str, args: argparse.Namespace, dsn: str) -> dict[str, Any]:
    """The Rust core and the Python way on one dataset, and whether their rows are the same."""
    generate = DATASETS[name]
    pages = scan_pages(generate(i) for i in range(args.items))
    total_bytes = sum(len(p) for p in pages)
    layout = full_layout(pages)
    n_items = sum(layout.encode_scan_page(p).row_count for p in pages)
    rust_times = time_runs(lambda: encode_rust(layout, pages), args.repeat)
    cpu0 = time.process_time()
    encode_rust(layout, pages)
    rust_cpu = time.process_time() - cpu0

    # The Python way on a prefix of the same pages (it is slow), scaled per item and per byte.
    py_pages: list[bytes] = []
    for p in pages:
        py_pages.append(p)
        if sum(layout.encode_scan_page(q).row_count for q in py_pages) >= args.python_items:
            break
    py_bytes = sum(len(p) for p in py_pages)
    py_items = sum(layout.encode_scan_page(p).row_count for p in py_pages)
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.cursor() as cur:
            py_times = time_runs(lambda: encode_python(cur, layout, py_pages), max(1, args.repeat // 2))
            theirs = encode_python(cur, layout, py_pages)
        ours = encode_rust(layout, py_pages)
        identical, checked = same_rows(conn, layout, ours, theirs)

    rust_s = statistics.median(rust_times)
    py_s = statistics.median(py_times)
    rust_mb_s = total_bytes / rust_s / 1e6
    py_mb_s = py_bytes / py_s / 1e6
    return {
        "dataset": {
            "kind": name,
            "items": n_items,
            "pages": len(pages),
            "raw_json_bytes": total_bytes,
            "columns": len(layout.columns),
        },
        "rust": {
            "seconds_median": rust_s,
            "seconds_all": rust_times,
            "cpu_seconds": rust_cpu,
            "mb_per_s": rust_mb_s,
            "items_per_s": n_items / rust_s,
            "mb_per_s_best": total_bytes / min(rust_times) / 1e6,
        },
        "python_way": {
            "items": py_items,
            "seconds_median": py_s,
            "mb_per_s": py_mb_s,
            "items_per_s": py_items / py_s,
        },
        "speedup": rust_mb_s / py_mb_s,
        "correct": identical,
        "rows_compared": checked,
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=200_000, help="items encoded by the Rust core per run")
    ap.add_argument("--python-items", type=int, default=20_000, help="items for the (slow) Python way")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dsn", default=os.environ.get("PODYN_TEST_DSN"), help="PostgreSQL for the correctness check")
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results", help="where to write encode.json/.md"
    )
    ap.add_argument("--datasets", default="typical,rich", help="comma-separated: typical, rich")
    args = ap.parse_args(argv)
    names = args.datasets.split(",")
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        ap.error(f"unknown dataset {unknown[0]!r}: choose from {', '.join(DATASETS)}")

    server = None
    dsn = args.dsn
    if not dsn:
        server = EmbeddedPostgres()
        dsn = server.start()
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            pg_version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        results = [measure(name, args, dsn) for name in names]
    finally:
        if server:
            server.stop()
    result = {
        "benchmark": "encode",
        "command": ".venv/bin/python -m benches.encode " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine.describe(pg_version),
        "datasets": results,
    }
    report(result, args.out)
    return 0 if all(r["correct"] for r in results) else 1


def report(result: dict[str, Any], out: Path) -> None:
    """Print the result and write it as JSON and markdown under ``out``."""
    lines = [
        f"machine: {result['machine']}",
        f"command: {result['command']}",
        "",
        "| dataset | items | bytes of Scan JSON per item | Rust core, one core: MB/s (best) | items/s"
        " | Python way: MB/s | speed-up | rows |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for one in result["datasets"]:
        d, r, p = one["dataset"], one["rust"], one["python_way"]
        verdict = f"{'identical' if one['correct'] else 'DIFFERENT'} ({one['rows_compared']:,} compared)"
        lines.append(
            f"| {d['kind']} | {d['items']:,} | {d['raw_json_bytes'] / d['items']:.0f} "
            f"| {r['mb_per_s']:.0f} ({r['mb_per_s_best']:.0f}) | {r['items_per_s']:,.0f} | {p['mb_per_s']:.1f} "
            f"| {one['speedup']:.1f}x | {verdict} |"
        )
    lines += [
        "",
        f"Rust: median of {len(result['datasets'][0]['rust']['seconds_all'])} runs over the same pages;"
        " the Python way is orjson + TypeDeserializer + psycopg's binary write_row; rows are compared"
        f" in PostgreSQL {result['machine'].get('postgresql')} after loading both outputs.",
    ]
    print("\n".join(lines))
    out.mkdir(parents=True, exist_ok=True)
    (out / "encode.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "encode.md").write_text("# Encoder benchmark\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
