"""What machine a benchmark ran on, printed and stored with every result."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg

from podyn_fast.embedded.postgres import EmbeddedPostgres


def describe(pg_version: str | None = None) -> dict[str, Any]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    if pg_version:
        info["postgresql"] = pg_version
    return info


@dataclass(frozen=True)
class Postgres:
    dsn: str
    version: str
    postmaster: int | None
    """The embedded server's postmaster (its CPU is PostgreSQL's), None for a server of the user's."""


# A benchmark's embedded server is as durable as a production one, with PostgreSQL's defaults:
# every commit flushed, full-page images after each checkpoint (random btree inserts pay for them
# in WAL), 128 MB of shared buffers and a checkpoint per GB of WAL. The test suite's embedded
# server turns these off; a benchmark that did would be friendlier than any real server.
DURABLE = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "shared_buffers": "128MB",
    "max_wal_size": "1GB",
}


@contextmanager
def postgres(dsn: str | None) -> Iterator[Postgres]:
    """The server a benchmark loads into: ``dsn``'s, else an embedded one for the run, DURABLE."""
    server = None
    if not dsn:
        server = EmbeddedPostgres(settings=DURABLE)
        dsn = server.start()
    try:
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        yield Postgres(dsn, str(row[0]) if row else "?", server.pid if server else None)
    finally:
        if server:
            server.stop()
