"""The column registry (``columns``): which column holds which attribute and type, in column order.
It decides the names, so every worker, host and follower agrees on them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from podyn_fast import retry
from podyn_fast._core import Layout
from podyn_fast.postgres import ddl
from podyn_fast.state.schema import qualified
from podyn_fast.state.tables import TableState, get_table


def register_columns(
    conn: psycopg.Connection[Any],
    schema: str,
    table: str,
    first_ordinal: int,
    entries: Sequence[tuple[str, str, str]],
) -> None:
    """Append (attribute, column type, column name) entries to the registry, from ``first_ordinal``."""
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL(
                "INSERT INTO {} (table_name, ordinal, attribute, column_type, column_name) VALUES (%s, %s, %s, %s, %s)"
            ).format(qualified(schema, "columns")),
            [(table, first_ordinal + i, a, t, c) for i, (a, t, c) in enumerate(entries)],
        )


def registry(conn: psycopg.Connection[Any], schema: str, table: str) -> list[tuple[str, str, str]]:
    """The registered columns of a table, in column order: (attribute, column type, column name)."""
    rows = conn.execute(
        sql.SQL("SELECT attribute, column_type, column_name FROM {} WHERE table_name = %s ORDER BY ordinal").format(
            qualified(schema, "columns")
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
        ).format(qualified(schema, "columns"), qualified(schema, "tables")),
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
            sql.SQL("SELECT 1 FROM {} WHERE table_name = %s FOR UPDATE").format(qualified(schema, "tables")),
            [state.table_name],
        )
        fresh = get_table(conn, schema, state.table_name)
        assert fresh is not None
        current = layout(conn, schema, fresh)
        added, document = plan_additions(current, fresh.document_column, unknown, column_limit)
        if not added and document == fresh.document_column:
            return fresh
        conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{lock_timeout_ms}ms")))
        register_columns(conn, schema, state.table_name, len(current.columns), added)
        new_columns = list(added)
        if document != fresh.document_column and document is not None:
            conn.execute(
                sql.SQL("UPDATE {} SET document_column = %s WHERE table_name = %s").format(qualified(schema, "tables")),
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
