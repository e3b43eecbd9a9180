"""The ``tables`` state table: one row per DynamoDB table (its target, mode, keys, segment count,
phase, stream, the follower's heartbeat and the last error)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg import sql

from podyn_fast.state.schema import qualified


@dataclass(frozen=True)
class TableState:
    """A table's row in the state schema."""

    table_name: str
    target_schema: str
    target_table: str
    mode: str
    lower_case: bool
    keys: list[tuple[str, str]]
    indexes: list[tuple[str, list[tuple[str, str]]]]
    total_segments: int
    deferred_primary_key: bool
    phase: str
    document_column: str | None
    stream_arn: str | None = None
    """The stream `follow` reads; a different LatestStreamArn later means changes were lost."""
    stopped: str | None = None
    """Why following this table stopped (a gap), if it did."""
    load_age: float | None = None
    """Seconds since its load began (when the state was read); None before, or from an older version."""
    source: str | None = None
    """The export folder (s3://…) its snapshot is loaded from, a segment per data file; None: a Scan."""


def get_table(conn: psycopg.Connection[Any], schema: str, table: str) -> TableState | None:
    row = conn.execute(
        sql.SQL(
            "SELECT table_name, target_schema, target_table, mode, lower_case, keys, indexes, total_segments,"
            " deferred_primary_key, phase, document_column, stream_arn, stopped,"
            " extract(epoch FROM now() - load_started_at)::float8, source FROM {} WHERE table_name = %s"
        ).format(qualified(schema, "tables")),
        [table],
    ).fetchone()
    if row is None:
        return None
    keys = [(a, t) for a, t in row[5]]
    indexes = [(n, [(a, t) for a, t in k]) for n, k in row[6]]
    return TableState(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        keys,
        indexes,
        row[7],
        row[8],
        row[9],
        row[10],
        row[11],
        row[12],
        row[13],
        row[14],
    )


def insert_table(
    conn: psycopg.Connection[Any], schema: str, state: TableState, *, item_count: int | None, size_bytes: int | None
) -> None:
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (table_name, target_schema, target_table, mode, lower_case, keys, indexes,"
            " total_segments, deferred_primary_key, document_column, item_count_estimate, size_bytes_estimate,"
            " source) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        ).format(qualified(schema, "tables")),
        [
            state.table_name,
            state.target_schema,
            state.target_table,
            state.mode,
            state.lower_case,
            orjson.dumps(state.keys).decode(),
            orjson.dumps(state.indexes).decode(),
            state.total_segments,
            state.deferred_primary_key,
            state.document_column,
            item_count,
            size_bytes,
            state.source,
        ],
    )


def record_error(conn: psycopg.Connection[Any], schema: str, table: str, message: str) -> None:
    """Keep the last error of a table for `status` (best effort: the connection may be what broke)."""
    with contextlib.suppress(psycopg.Error):
        conn.execute(
            sql.SQL("UPDATE {} SET last_error = %s, last_error_at = now() WHERE table_name = %s").format(
                qualified(schema, "tables")
            ),
            [message, table],
        )


def heartbeat(conn: psycopg.Connection[Any], schema: str, lags: dict[str, float | None]) -> None:
    """A follower's lag per table, and that it is alive, for `status`."""
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL("UPDATE {} SET follow_lag = %s, follow_heartbeat = now() WHERE table_name = %s").format(
                qualified(schema, "tables")
            ),
            [(lag, name) for name, lag in lags.items()],
        )


# A table's phases, in the only order they go: loading → loaded → following.
PHASES = ("loading", "loaded", "following")


def set_phase(conn: psycopg.Connection[Any], schema: str, table: str, phase: str) -> None:
    """Move ``table`` on to ``phase``; never back (a second host finishing its share of a load
    must not turn a followed table back to loaded)."""
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}")
    with conn.transaction():
        conn.execute(
            sql.SQL(
                "UPDATE {} SET phase = %(phase)s,"
                " loaded_at = CASE WHEN %(phase)s = 'loaded' THEN now() ELSE loaded_at END"
                " WHERE table_name = %(table)s"
                " AND array_position(%(phases)s::text[], phase) < array_position(%(phases)s::text[], %(phase)s)"
            ).format(qualified(schema, "tables")),
            {"phase": phase, "table": table, "phases": list(PHASES)},
        )


def table_names(conn: psycopg.Connection[Any], schema: str) -> list[str]:
    """Every table recorded in the state schema, by name."""
    rows = conn.execute(sql.SQL("SELECT table_name FROM {} ORDER BY table_name").format(qualified(schema, "tables")))
    return [str(r[0]) for r in rows.fetchall()]


def phase(conn: psycopg.Connection[Any], schema: str, table: str) -> str | None:
    """``loading``, ``loaded`` or ``following``; None for a table not recorded."""
    row = conn.execute(
        sql.SQL("SELECT phase FROM {} WHERE table_name = %s").format(qualified(schema, "tables")), [table]
    ).fetchone()
    return str(row[0]) if row else None


def mark_load_start(
    conn: psycopg.Connection[Any], schema: str, table: str, stream_arn: str | None, *, at: float | None = None
) -> None:
    """The load of ``table`` begins (first time only): the moment changes start to matter (now, or
    ``at``, seconds since the epoch: an export's), and the stream that captures them (None: the
    table has none). A follower refuses a stream enabled later, or a first read of the stream once
    the records from this moment may have aged out."""
    conn.execute(
        sql.SQL(
            "UPDATE {} SET load_started_at = coalesce(to_timestamp(%s), now()), stream_arn = coalesce(stream_arn, %s)"
            " WHERE table_name = %s AND load_started_at IS NULL"
        ).format(qualified(schema, "tables")),
        [at, stream_arn, table],
    )


def set_stream(conn: psycopg.Connection[Any], schema: str, table: str, stream_arn: str) -> None:
    """The stream `follow` reads from now on: a different one later means changes were lost."""
    conn.execute(
        sql.SQL("UPDATE {} SET stream_arn = %s WHERE table_name = %s").format(qualified(schema, "tables")),
        [stream_arn, table],
    )


def set_stopped(conn: psycopg.Connection[Any], schema: str, table: str, why: str) -> None:
    """Following this table stopped, for ``why`` (a gap): no follower takes it up again."""
    conn.execute(
        sql.SQL("UPDATE {} SET stopped = %s WHERE table_name = %s").format(qualified(schema, "tables")),
        [why, table],
    )


def lock_follower(conn: psycopg.Connection[Any], schema: str, table: str) -> bool:
    """Take the table's follower lock for this session; False when another session holds it: two
    followers would apply every change twice."""
    row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [f"podyn-fast follow {schema} {table}"]).fetchone()
    return bool(row and row[0])
