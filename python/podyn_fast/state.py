"""The state schema in PostgreSQL: tables, the column registry, segment checkpoints, rejects.

Everything that makes a load resumable lives here and is written in the same transactions as the
rows it describes, so PostgreSQL's own atomicity gives exactly-once: a segment's position moves
only when its rows commit. Segments are leased (``FOR UPDATE SKIP LOCKED``) so that any number of
processes, on any number of hosts, share one queue without a coordinator.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg import sql

from podyn_fast import retry
from podyn_fast._core import Layout, Reject
from podyn_fast.postgres import ddl

# Serialises creating the state schema and registering tables: two runs starting at once must
# not both CREATE the same objects.
_SETUP_LOCK = "podyn-fast setup"


def _q(schema: str, table: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


def setup_lock(conn: psycopg.Connection[Any]) -> None:
    """Serialise DDL with other podyn-fast processes until the caller's transaction ends:
    ``CREATE … IF NOT EXISTS`` run concurrently can still fail on the catalogs' unique indexes."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [_SETUP_LOCK])


def ensure_schema(conn: psycopg.Connection[Any], schema: str) -> None:
    """Create the state schema and its tables if they do not exist (idempotent, concurrent-safe)."""
    with conn.transaction():
        setup_lock(conn)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        for stmt in (
            """CREATE TABLE IF NOT EXISTS {tables} (
                table_name text PRIMARY KEY,
                target_schema text NOT NULL,
                target_table text NOT NULL,
                mode text NOT NULL,
                lower_case boolean NOT NULL,
                keys jsonb NOT NULL,
                indexes jsonb NOT NULL,
                total_segments integer NOT NULL,
                deferred_primary_key boolean NOT NULL DEFAULT false,
                phase text NOT NULL DEFAULT 'loading',
                document_column text,
                item_count_estimate bigint,
                size_bytes_estimate bigint,
                stream_arn text,
                stopped text,
                last_error text,
                last_error_at timestamptz,
                follow_lag double precision,
                follow_heartbeat timestamptz,
                created_at timestamptz NOT NULL DEFAULT now(),
                loaded_at timestamptz)""",
            """CREATE TABLE IF NOT EXISTS {columns} (
                table_name text NOT NULL REFERENCES {tables} ON DELETE CASCADE,
                ordinal integer NOT NULL,
                attribute text NOT NULL,
                column_type text NOT NULL,
                column_name text NOT NULL,
                PRIMARY KEY (table_name, ordinal),
                UNIQUE (table_name, attribute, column_type),
                UNIQUE (table_name, column_name))""",
            """CREATE TABLE IF NOT EXISTS {segments} (
                table_name text NOT NULL REFERENCES {tables} ON DELETE CASCADE,
                segment integer NOT NULL,
                last_key bytea,
                done boolean NOT NULL DEFAULT false,
                items bigint NOT NULL DEFAULT 0,
                rejects bigint NOT NULL DEFAULT 0,
                scanned bigint NOT NULL DEFAULT 0,
                bytes bigint NOT NULL DEFAULT 0,
                pages bigint NOT NULL DEFAULT 0,
                capacity double precision NOT NULL DEFAULT 0,
                owner text,
                lease_until timestamptz,
                PRIMARY KEY (table_name, segment))""",
            """CREATE TABLE IF NOT EXISTS {shards} (
                table_name text NOT NULL REFERENCES {tables} ON DELETE CASCADE,
                stream_arn text NOT NULL,
                shard_id text NOT NULL,
                parent_shard_id text,
                last_sequence text,
                finished boolean NOT NULL DEFAULT false,
                records bigint NOT NULL DEFAULT 0,
                last_created double precision,
                updated_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (table_name, stream_arn, shard_id))""",
            """CREATE TABLE IF NOT EXISTS {changes} (
                id bigserial PRIMARY KEY,
                table_name text NOT NULL REFERENCES {tables} ON DELETE CASCADE,
                shard_id text NOT NULL,
                body bytea NOT NULL)""",
            """CREATE TABLE IF NOT EXISTS {rejects} (
                id bigserial PRIMARY KEY,
                table_name text NOT NULL,
                key text NOT NULL,
                item bytea NOT NULL,
                reason text NOT NULL,
                rejected_at timestamptz NOT NULL DEFAULT now())""",
        ):
            conn.execute(
                sql.SQL(stmt).format(
                    tables=_q(schema, "tables"),
                    columns=_q(schema, "columns"),
                    segments=_q(schema, "segments"),
                    rejects=_q(schema, "rejects"),
                    shards=_q(schema, "shards"),
                    changes=_q(schema, "changes"),
                )
            )
        _upgrade(conn, schema)


# Columns later versions added to a state table, for state schemas an earlier one created: a load
# or a follower started before an upgrade goes on after it.
_ADDED_COLUMNS = {
    "tables": {
        "last_error": "text",
        "last_error_at": "timestamptz",
        "follow_lag": "double precision",
        "follow_heartbeat": "timestamptz",
    },
}


def _upgrade(conn: psycopg.Connection[Any], schema: str) -> None:
    """Add what is missing only: an ALTER would lock the table even when it changes nothing."""
    for table, columns in _ADDED_COLUMNS.items():
        present = {
            str(r[0])
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
                [schema, table],
            )
        }
        for column, ty in columns.items():
            if column not in present:
                conn.execute(
                    sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                        _q(schema, table), sql.Identifier(column), sql.SQL(ty)
                    )
                )


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


def get_table(conn: psycopg.Connection[Any], schema: str, table: str) -> TableState | None:
    row = conn.execute(
        sql.SQL(
            "SELECT table_name, target_schema, target_table, mode, lower_case, keys, indexes, total_segments,"
            " deferred_primary_key, phase, document_column, stream_arn, stopped FROM {} WHERE table_name = %s"
        ).format(_q(schema, "tables")),
        [table],
    ).fetchone()
    if row is None:
        return None
    keys = [(a, t) for a, t in row[5]]
    indexes = [(n, [(a, t) for a, t in k]) for n, k in row[6]]
    return TableState(
        row[0], row[1], row[2], row[3], row[4], keys, indexes, row[7], row[8], row[9], row[10], row[11], row[12]
    )


def register_table(
    conn: psycopg.Connection[Any],
    schema: str,
    state: TableState,
    initial_columns: Sequence[tuple[str, str, str]],
    *,
    item_count: int | None,
    size_bytes: int | None,
) -> TableState:
    """Record a table, its first columns and its segments, unless an earlier run did; then return
    what is recorded (the first run fixes mode, keys and TotalSegments)."""
    with conn.transaction():
        setup_lock(conn)
        existing = get_table(conn, schema, state.table_name)
        if existing is not None:
            return existing
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (table_name, target_schema, target_table, mode, lower_case, keys, indexes,"
                " total_segments, deferred_primary_key, document_column, item_count_estimate, size_bytes_estimate)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            ).format(_q(schema, "tables")),
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
            ],
        )
        with conn.cursor() as cur:
            cur.executemany(
                sql.SQL(
                    "INSERT INTO {} (table_name, ordinal, attribute, column_type, column_name)"
                    " VALUES (%s, %s, %s, %s, %s)"
                ).format(_q(schema, "columns")),
                [(state.table_name, i, a, t, c) for i, (a, t, c) in enumerate(initial_columns)],
            )
            cur.executemany(
                sql.SQL("INSERT INTO {} (table_name, segment) VALUES (%s, %s)").format(_q(schema, "segments")),
                [(state.table_name, s) for s in range(state.total_segments)],
            )
        return state


def registry(conn: psycopg.Connection[Any], schema: str, table: str) -> list[tuple[str, str, str]]:
    """The registered columns of a table, in column order: (attribute, column type, column name)."""
    rows = conn.execute(
        sql.SQL("SELECT attribute, column_type, column_name FROM {} WHERE table_name = %s ORDER BY ordinal").format(
            _q(schema, "columns")
        ),
        [table],
    ).fetchall()
    return [(a, t, c) for a, t, c in rows]


def layout(conn: psycopg.Connection[Any], schema: str, state: TableState) -> Layout:
    """The table's current layout, from the registry."""
    return Layout(
        state.keys,
        registry(conn, schema, state.table_name),
        mode="jsonb" if state.mode == "jsonb" else "columns",
        document=state.document_column,
        lower_case=state.lower_case,
    )


def lock_registry(conn: psycopg.Connection[Any], schema: str, table: str) -> tuple[str | None, int]:
    """In the caller's transaction: the table's overflow column and number of registered columns,
    which stay so until it ends (``add_columns`` locks the same row FOR UPDATE)."""
    row = conn.execute(
        sql.SQL(
            "SELECT t.document_column, (SELECT count(*) FROM {} c WHERE c.table_name = t.table_name)"
            " FROM {} t WHERE t.table_name = %s FOR SHARE OF t"
        ).format(_q(schema, "columns"), _q(schema, "tables")),
        [table],
    ).fetchone()
    assert row is not None, f"table {table!r} has no state"
    return row[0], int(row[1])


def add_columns(
    conn: psycopg.Connection[Any],
    schema: str,
    state: TableState,
    unknown: Sequence[tuple[str, str]],
    *,
    column_limit: int,
    lock_timeout_ms: int = 2000,
) -> TableState:
    """Register columns for ``unknown`` (attribute, column type) pairs and add them to the target
    table, in one transaction, so the registry never names a column the table lacks.

    The registry row of the table is locked while names are chosen, so concurrent workers (and
    hosts) agree on every name. Past ``column_limit`` columns, the table gets its overflow jsonb
    column instead and the state says so. Returns the table state (its document column may have
    changed). The ALTER waits at most ``lock_timeout_ms`` for other transactions on the table (a
    waiting ALTER blocks every newcomer behind it); then the whole transaction is tried again.
    """
    backoff = retry.Backoff(0.05, 2.0)
    while True:
        try:
            return _add_columns(conn, schema, state, unknown, column_limit, lock_timeout_ms)
        except psycopg.errors.LockNotAvailable:
            backoff.sleep()


def _add_columns(
    conn: psycopg.Connection[Any],
    schema: str,
    state: TableState,
    unknown: Sequence[tuple[str, str]],
    column_limit: int,
    lock_timeout_ms: int,
) -> TableState:
    with conn.transaction():
        conn.execute(
            sql.SQL("SELECT 1 FROM {} WHERE table_name = %s FOR UPDATE").format(_q(schema, "tables")),
            [state.table_name],
        )
        fresh = get_table(conn, schema, state.table_name)
        assert fresh is not None
        current = layout(conn, schema, fresh)
        added, document = plan_additions(current, fresh.document_column, unknown, column_limit)
        if not added and document == fresh.document_column:
            return fresh
        conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{lock_timeout_ms}ms")))
        ordinal = len(current.columns)
        with conn.cursor() as cur:
            cur.executemany(
                sql.SQL(
                    "INSERT INTO {} (table_name, ordinal, attribute, column_type, column_name)"
                    " VALUES (%s, %s, %s, %s, %s)"
                ).format(_q(schema, "columns")),
                [(state.table_name, ordinal + i, a, t, c) for i, (a, t, c) in enumerate(added)],
            )
        new_columns = list(added)
        if document != fresh.document_column and document is not None:
            conn.execute(
                sql.SQL("UPDATE {} SET document_column = %s WHERE table_name = %s").format(_q(schema, "tables")),
                [document, state.table_name],
            )
            new_columns.append(("", "jsonb", document))
        if new_columns:
            conn.execute(ddl.add_columns(fresh.target_schema, fresh.target_table, new_columns))
        updated = get_table(conn, schema, state.table_name)
        assert updated is not None
        return updated


def plan_additions(
    current: Layout, document: str | None, unknown: Sequence[tuple[str, str]], column_limit: int
) -> tuple[list[tuple[str, str, str]], str | None]:
    """The registry entries to add for ``unknown`` (attribute, column type) pairs, and the overflow
    column: past ``column_limit`` columns the table gets one, and no column is added after it."""
    planned = current.plan_columns(list(unknown))
    if not planned or document is not None:
        # Registered already, or the table reached its column limit: then every attribute without
        # a column goes to the overflow column, never to a column created later (an attribute must
        # not live in the column for some rows and in the overflow document for others).
        return [], document
    room = column_limit - len(current.columns)
    if len(planned) > room:
        # Attribute columns are named after attributes; this one must not take a planned name.
        document = _free_name(current, planned, "_overflow")
        room -= 1
    return planned[: max(room, 0)], document


def _free_name(layout: Layout, planned: Sequence[tuple[str, str, str]], wanted: str) -> str:
    taken = set(layout.column_names) | {c for _, _, c in planned}
    name, n = wanted, 2
    while name in taken:
        name, n = f"{wanted}_{n}", n + 1
    return name


@dataclass(frozen=True)
class Claim:
    """A segment leased to one worker."""

    table_name: str
    segment: int
    last_key: bytes | None
    owner: str


def owner_id() -> str:
    """Who holds a lease: host and process, so a rerun on the same host can take over the leases
    of processes that are gone without waiting for them to expire."""
    return f"{socket.gethostname()}:{os.getpid()}"


def held_elsewhere(conn: psycopg.Connection[Any], schema: str, tables: Sequence[str]) -> tuple[int, int]:
    """(segments not done, of which nobody could claim now): the latter are leased by live
    processes, on this host or another, whose leases have not run out."""
    dead = _dead_local_owners(conn, schema, tables)
    row = conn.execute(
        sql.SQL(
            "SELECT count(*), count(*) FILTER (WHERE owner IS NOT NULL AND lease_until >= now()"
            " AND NOT owner = ANY(%s)) FROM {} WHERE table_name = ANY(%s) AND NOT done"
        ).format(_q(schema, "segments")),
        [dead, list(tables)],
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _dead_local_owners(conn: psycopg.Connection[Any], schema: str, tables: Sequence[str]) -> list[str]:
    host = socket.gethostname()
    rows = conn.execute(
        sql.SQL("SELECT DISTINCT owner FROM {} WHERE table_name = ANY(%s) AND NOT done AND owner LIKE %s").format(
            _q(schema, "segments")
        ),
        [list(tables), host.replace("%", r"\%").replace("_", r"\_") + ":%"],
    ).fetchall()
    return [owner for (owner,) in rows if not _alive(int(owner.rsplit(":", 1)[1]))]


def _alive(pid: int) -> bool:
    """Whether a process of this host still runs. A zombie does not: an orphaned worker that
    exited stays one where nothing reaps it, and must not keep its segment for a whole lease."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return True  # no /proc: trust the signal check


def claim(
    conn: psycopg.Connection[Any], schema: str, tables: Sequence[str], owner: str, lease_seconds: float
) -> Claim | None:
    """Lease the next segment that is not done and not held (or whose lease expired, or whose
    holder on this host is gone, or that ``owner`` holds already: a loader that lost its
    connection mid-segment takes it up again). None when every segment is done or held."""
    dead = _dead_local_owners(conn, schema, tables)
    with conn.transaction():
        row = conn.execute(
            sql.SQL(
                "UPDATE {seg} s SET owner = %(owner)s, lease_until = now() + %(lease)s * interval '1 second'"
                " FROM (SELECT table_name, segment FROM {seg}"
                "       WHERE table_name = ANY(%(tables)s) AND NOT done"
                "         AND (owner IS NULL OR lease_until < now() OR owner = ANY(%(dead)s) OR owner = %(owner)s)"
                "       ORDER BY array_position(%(tables)s, table_name), segment"
                "       LIMIT 1 FOR UPDATE SKIP LOCKED) pick"
                " WHERE s.table_name = pick.table_name AND s.segment = pick.segment"
                " RETURNING s.table_name, s.segment, s.last_key"
            ).format(seg=_q(schema, "segments")),
            {"owner": owner, "lease": lease_seconds, "tables": list(tables), "dead": dead},
        ).fetchone()
    if row is None:
        return None
    return Claim(row[0], row[1], bytes(row[2]) if row[2] is not None else None, owner)


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
            " lease_until = CASE WHEN %s THEN NULL ELSE now() + %s * interval '1 second' END,"
            " owner = CASE WHEN %s THEN NULL ELSE owner END"
            " WHERE table_name = %s AND segment = %s AND owner = %s AND NOT done"
            " AND last_key IS NOT DISTINCT FROM %s"
        ).format(_q(schema, "segments")),
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
            ).format(_q(schema, "segments")),
            [held.table_name, held.segment, held.owner],
        )


def record_rejects(conn: psycopg.Connection[Any], schema: str, table: str, rejects: Sequence[Reject]) -> None:
    """Keep rejected items with their raw bytes and reason, in the caller's transaction."""
    if not rejects:
        return
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL("INSERT INTO {} (table_name, key, item, reason) VALUES (%s, %s, %s, %s)").format(
                _q(schema, "rejects")
            ),
            [(table, r.key.decode("utf-8", "replace"), r.item, r.reason) for r in rejects],
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
        ).format(_q(schema, "segments")),
        [table],
    ).fetchone()
    assert row is not None
    return Progress(int(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4]))


def active_leases(conn: psycopg.Connection[Any], schema: str, table: str) -> int:
    """How many workers (on any host) hold a live lease on the table: they share its scan rate."""
    row = conn.execute(
        sql.SQL(
            "SELECT count(*) FROM {} WHERE table_name = %s AND NOT done AND owner IS NOT NULL AND lease_until > now()"
        ).format(_q(schema, "segments")),
        [table],
    ).fetchone()
    return int(row[0]) if row else 0


def record_error(conn: psycopg.Connection[Any], schema: str, table: str, message: str) -> None:
    """Keep the last error of a table for `status` (best effort: the connection may be what broke)."""
    with contextlib.suppress(psycopg.Error):
        conn.execute(
            sql.SQL("UPDATE {} SET last_error = %s, last_error_at = now() WHERE table_name = %s").format(
                _q(schema, "tables")
            ),
            [message, table],
        )


def heartbeat(conn: psycopg.Connection[Any], schema: str, lags: dict[str, float | None]) -> None:
    """A follower's lag per table, and that it is alive, for `status`."""
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL("UPDATE {} SET follow_lag = %s, follow_heartbeat = now() WHERE table_name = %s").format(
                _q(schema, "tables")
            ),
            [(lag, name) for name, lag in lags.items()],
        )


def set_phase(conn: psycopg.Connection[Any], schema: str, table: str, phase: str) -> None:
    with conn.transaction():
        conn.execute(
            sql.SQL(
                "UPDATE {} SET phase = %s, loaded_at = CASE WHEN %s = 'loaded' THEN now() ELSE loaded_at END"
                " WHERE table_name = %s"
            ).format(_q(schema, "tables")),
            [phase, phase, table],
        )
