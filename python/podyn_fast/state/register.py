"""Recording a table at its first run: its row, its first columns and its segments, at once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from podyn_fast.state.columns import register_columns
from podyn_fast.state.schema import setup_lock
from podyn_fast.state.segments import add_segments
from podyn_fast.state.tables import TableState, get_table, insert_table


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
        insert_table(conn, schema, state, item_count=item_count, size_bytes=size_bytes)
        register_columns(conn, schema, state.table_name, 0, initial_columns)
        add_segments(conn, schema, state.table_name, state.total_segments)
        return state
