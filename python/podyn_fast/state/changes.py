"""Captured changes (``changes``): GetRecords bodies kept raw while their table loads, applied in
the order they were read once the load is done."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from podyn_fast.state.schema import qualified


def keep_change(conn: psycopg.Connection[Any], schema: str, table: str, shard_id: str, body: bytes) -> None:
    conn.execute(
        sql.SQL("INSERT INTO {} (table_name, shard_id, body) VALUES (%s, %s, %s)").format(qualified(schema, "changes")),
        [table, shard_id, body],
    )


def next_change(conn: psycopg.Connection[Any], schema: str, table: str) -> tuple[int, bytes] | None:
    """The oldest change kept for ``table``: (its id, the body)."""
    row = conn.execute(
        sql.SQL("SELECT id, body FROM {} WHERE table_name = %s ORDER BY id LIMIT 1").format(
            qualified(schema, "changes")
        ),
        [table],
    ).fetchone()
    return (int(row[0]), bytes(row[1])) if row else None


def drop_change(conn: psycopg.Connection[Any], schema: str, change_id: int) -> None:
    """In the transaction that applied it."""
    conn.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(qualified(schema, "changes")), [change_id])
