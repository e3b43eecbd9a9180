"""Scan segments (``segments``): positions committed with their rows, and the leases that let any
number of processes, on any number of hosts, share one queue (``FOR UPDATE SKIP LOCKED``).

Leases are read and written against ``clock_timestamp()``, never ``now()``: ``now()`` is when the
transaction began, and a loader's transaction may outlast its lease (pages slower than the lease,
throttling); its checkpoint would then commit a lease that had run out before it was written, and
another worker would take the segment from a holder at work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from podyn_fast.state import owners
from podyn_fast.state.schema import qualified


@dataclass(frozen=True)
class Claim:
    """A segment leased to one worker."""

    table_name: str
    segment: int
    last_key: bytes | None
    owner: str
    taken_from: str | None = None
    """The holder whose lease this one replaces (it ran out, or the holder is gone)."""


def owner_id() -> str:
    """This process's identity as a lease holder (state/owners.py)."""
    return str(owners.me())


def held_elsewhere(conn: psycopg.Connection[Any], schema: str, tables: Sequence[str]) -> tuple[int, int]:
    """(segments not done, of which nobody could claim now): the latter are leased by live
    processes, on this host or another, whose leases have not run out."""
    gone = _gone_owners(conn, schema, tables)
    row = conn.execute(
        sql.SQL(
            "SELECT count(*), count(*) FILTER (WHERE owner IS NOT NULL AND lease_until >= clock_timestamp()"
            " AND NOT owner = ANY(%s)) FROM {} WHERE table_name = ANY(%s) AND NOT done"
        ).format(qualified(schema, "segments")),
        [gone, list(tables)],
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _gone_owners(conn: psycopg.Connection[Any], schema: str, tables: Sequence[str]) -> list[str]:
    """Holders of live leases known to be gone without waiting for them to run out."""
    rows = conn.execute(
        sql.SQL(
            "SELECT DISTINCT owner FROM {} WHERE table_name = ANY(%s) AND NOT done AND owner IS NOT NULL"
            " AND lease_until >= clock_timestamp()"
        ).format(qualified(schema, "segments")),
        [list(tables)],
    ).fetchall()
    return [owner for (owner,) in rows if owners.gone(owner)]


def claim(
    conn: psycopg.Connection[Any], schema: str, tables: Sequence[str], owner: str, lease_seconds: float
) -> Claim | None:
    """Lease the next segment that is not done and not held (or whose lease expired, or whose
    holder on this host is gone, or that ``owner`` holds already: a loader that lost its
    connection mid-segment takes it up again). None when every segment is done or held."""
    gone = _gone_owners(conn, schema, tables)
    with conn.transaction():
        row = conn.execute(
            sql.SQL(
                "UPDATE {seg} s SET owner = %(owner)s,"
                "  lease_until = clock_timestamp() + %(lease)s * interval '1 second'"
                " FROM (SELECT table_name, segment, owner FROM {seg}"
                "       WHERE table_name = ANY(%(tables)s) AND NOT done"
                "         AND (owner IS NULL OR lease_until < clock_timestamp()"
                "              OR owner = ANY(%(gone)s) OR owner = %(owner)s)"
                "       ORDER BY array_position(%(tables)s, table_name), segment"
                "       LIMIT 1 FOR UPDATE SKIP LOCKED) pick"
                " WHERE s.table_name = pick.table_name AND s.segment = pick.segment"
                " RETURNING s.table_name, s.segment, s.last_key, pick.owner"
            ).format(seg=qualified(schema, "segments")),
            {"owner": owner, "lease": lease_seconds, "tables": list(tables), "gone": gone},
        ).fetchone()
    if row is None:
        return None
    before = row[3] if row[3] != owner else None
    return Claim(row[0], row[1], bytes(row[2]) if row[2] is not None else None, owner, before)


def renew(conn: psycopg.Connection[Any], schema: str, owner: str, lease_seconds: float) -> int:
    """Move on the lease of every segment ``owner`` holds (the lease keeper's heartbeat); returns
    how many it holds."""
    with conn.transaction():
        cur = conn.execute(
            sql.SQL(
                "UPDATE {} SET lease_until = clock_timestamp() + %s * interval '1 second' WHERE owner = %s AND NOT done"
            ).format(qualified(schema, "segments")),
            [lease_seconds, owner],
        )
    return cur.rowcount


def holds(conn: psycopg.Connection[Any], schema: str, held: Claim) -> bool:
    """Whether ``held`` is still this worker's: another takes a segment whose lease ran out."""
    row = conn.execute(
        sql.SQL("SELECT owner = %s AND NOT done FROM {} WHERE table_name = %s AND segment = %s").format(
            qualified(schema, "segments")
        ),
        [held.owner, held.table_name, held.segment],
    ).fetchone()
    return bool(row and row[0])


def checkpoint(
    conn: psycopg.Connection[Any],
    schema: str,
    held: Claim,
    *,
    previous_key: bytes | None,
    last_key: bytes | None,
    done: bool,
    items: int,
    rejects: int,
    scanned: int,
    nbytes: int,
    pages: int,
    capacity: float,
    lease_seconds: float,
) -> bool:
    """Move the segment's position from ``previous_key`` to ``last_key``, inside the caller's
    transaction (the one holding the rows). False when the lease was lost to another worker, or
    the position is not where this worker left it (an earlier connection of its own committed after
    all): the caller must roll back."""
    cur = conn.execute(
        sql.SQL(
            "UPDATE {} SET last_key = %s, done = %s, items = items + %s, rejects = rejects + %s,"
            " scanned = scanned + %s, bytes = bytes + %s, pages = pages + %s, capacity = capacity + %s,"
            " lease_until = CASE WHEN %s THEN NULL ELSE clock_timestamp() + %s * interval '1 second' END,"
            " owner = CASE WHEN %s THEN NULL ELSE owner END"
            " WHERE table_name = %s AND segment = %s AND owner = %s AND NOT done"
            " AND last_key IS NOT DISTINCT FROM %s"
        ).format(qualified(schema, "segments")),
        [
            last_key,
            done,
            items,
            rejects,
            scanned,
            nbytes,
            pages,
            capacity,
            done,
            lease_seconds,
            done,
            held.table_name,
            held.segment,
            held.owner,
            previous_key,
        ],
    )
    return cur.rowcount == 1


def release(conn: psycopg.Connection[Any], schema: str, held: Claim) -> None:
    """Give a segment back without finishing it (the worker is stopping)."""
    with conn.transaction():
        conn.execute(
            sql.SQL(
                "UPDATE {} SET owner = NULL, lease_until = NULL WHERE table_name = %s AND segment = %s AND owner = %s"
            ).format(qualified(schema, "segments")),
            [held.table_name, held.segment, held.owner],
        )


@dataclass(frozen=True)
class Progress:
    """Committed totals of a table's load."""

    items: int
    rejects: int
    bytes: int
    segments_done: int
    total_segments: int


def progress(conn: psycopg.Connection[Any], schema: str, table: str) -> Progress:
    row = conn.execute(
        sql.SQL(
            "SELECT coalesce(sum(items), 0), coalesce(sum(rejects), 0), coalesce(sum(bytes), 0),"
            " count(*) FILTER (WHERE done), count(*) FROM {} WHERE table_name = %s"
        ).format(qualified(schema, "segments")),
        [table],
    ).fetchone()
    assert row is not None
    return Progress(int(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4]))


def active_leases(conn: psycopg.Connection[Any], schema: str, table: str) -> int:
    """How many workers (on any host) hold a live lease on the table: they share its scan rate."""
    row = conn.execute(
        sql.SQL(
            "SELECT count(*) FROM {} WHERE table_name = %s AND NOT done AND owner IS NOT NULL"
            " AND lease_until > clock_timestamp()"
        ).format(qualified(schema, "segments")),
        [table],
    ).fetchone()
    return int(row[0]) if row else 0


def add_segments(conn: psycopg.Connection[Any], schema: str, table: str, total: int) -> None:
    """The segments of a table's first run, none loaded."""
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL("INSERT INTO {} (table_name, segment) VALUES (%s, %s)").format(qualified(schema, "segments")),
            [(table, s) for s in range(total)],
        )
