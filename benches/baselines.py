"""The baselines podyn-fast is measured against, on the same rows in the same run.

- ``ceiling``: PostgreSQL's own server-side ``COPY … FROM 'file' (FORMAT binary)`` of the very rows
  podyn-fast produced, split over as many sessions as podyn-fast used connections: what the server
  can ingest with no client at all.
- ``python_way``: what a Python user would write: boto3's paginated Scan with its parser and
  ``TypeDeserializer``, then psycopg's binary ``Copy.write_row``, over the same segments in the same
  number of processes. With one segment and ``Limit=100`` it is Podyn's own algorithm.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import psycopg
from boto3.dynamodb.types import TypeDeserializer
from psycopg import sql

from benches.encode import _to_python
from podyn_fast import _core
from podyn_fast.dynamo.client import RawDynamo
from podyn_fast.postgres import ddl


def server_alone(endpoint: str, source: str, segments: int, threads: int) -> tuple[float, int, int]:
    """Seconds, items and bytes for reading every page raw (no encoding, no PostgreSQL): what the
    Scan server can serve, to show it is not what limits the end-to-end figures."""
    dynamo = RawDynamo(endpoint_url=endpoint, region="us-east-1")
    layout = _core.Layout([("pk", "S")], [("pk", "text", "pk")], document="rest")

    def segment(n: int) -> tuple[int, int]:
        key, items, nbytes = None, 0, 0
        while True:
            body = dynamo.scan_page(source, segment=n, total_segments=segments, exclusive_start_key=key)
            nbytes += len(body)
            # The key of the next page only: the encoder is the cheapest reader of a body we have.
            page = layout.encode_scan_page(body)
            items += page.count or 0
            key = page.last_evaluated_key
            if key is None:
                return items, nbytes

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(segment, range(segments)))
    return time.perf_counter() - started, sum(r[0] for r in results), sum(r[1] for r in results)


def _fresh_table(dsn: str, schema: str, table: str, layout: _core.Layout) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(ddl.create_table(schema, table, layout))


def ceiling(dsn: str, schema: str, table: str, layout: _core.Layout, pages: Sequence[bytes], sessions: int) -> float:
    """Seconds for the server to load ``pages`` (encoded once, beforehand) from files, in parallel."""
    chunks: list[list[bytes]] = [[] for _ in range(sessions)]
    for i, page in enumerate(pages):
        encoded = layout.encode_scan_page(page)
        assert not encoded.unknown and not encoded.rejects
        chunks[i % sessions].append(encoded.rows)
    _fresh_table(dsn, schema, table, layout)
    files: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="podyn-ceiling-") as tmp:
        os.chmod(tmp, 0o755)  # noqa: S103  (the server reads the files as its own user)
        for n, rows in enumerate(chunks):
            path = Path(tmp) / f"part{n}.copy"
            path.write_bytes(_core.COPY_HEADER + b"".join(rows) + _core.COPY_TRAILER)
            path.chmod(0o644)
            files.append(path)
        columns = sql.SQL(", ").join(map(sql.Identifier, layout.column_names))
        errors: list[BaseException] = []

        def load(path: Path) -> None:
            try:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute(
                        sql.SQL("COPY {}.{} ({}) FROM {} (FORMAT binary)").format(
                            sql.Identifier(schema), sql.Identifier(table), columns, sql.Literal(str(path))
                        )
                    )
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=load, args=(f,)) for f in files]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - started
    if errors:
        raise errors[0]
    return seconds


def _python_segment(args: tuple[str, str, str, str, str, int, int, int | None, list[tuple[str, str, str]]]) -> int:
    endpoint, dsn, source, schema, table, segment, total, limit, columns = args
    client = boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",  # noqa: S106  (the local test server checks no signature)
    )
    deserializer = TypeDeserializer()
    params: dict[str, Any] = {"TableName": source, "Segment": segment, "TotalSegments": total}
    if limit:
        params["PaginationConfig"] = {"PageSize": limit}
    n = 0
    stmt = sql.SQL("COPY {}.{} ({}) FROM STDIN (FORMAT binary)").format(
        sql.Identifier(schema), sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for _, _, c in columns)
    )
    with psycopg.connect(dsn) as conn, conn.cursor() as cur, cur.copy(stmt) as copy:
        copy.set_types([t for _, t, _ in columns])
        for page in client.get_paginator("scan").paginate(**params):
            for item in page["Items"]:
                values = {k: deserializer.deserialize(v) for k, v in item.items()}
                copy.write_row([_to_python(values.get(attr)) for attr, _, _ in columns])
                n += 1
    return n


def python_way(
    endpoint: str,
    dsn: str,
    source: str,
    schema: str,
    table: str,
    layout: _core.Layout,
    *,
    segments: int,
    workers: int,
    limit: int | None = None,
) -> tuple[float, int]:
    """Seconds and rows for the Python way over ``segments`` in ``workers`` processes."""
    _fresh_table(dsn, schema, table, layout)
    jobs = [(endpoint, dsn, source, schema, table, s, segments, limit, layout.columns) for s in range(segments)]
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        rows = sum(pool.map(_python_segment, jobs))
    return time.perf_counter() - started, rows
