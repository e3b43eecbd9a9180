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


def next_changes(conn: psycopg.Connection[Any], schema: str, table: str, max_bytes: int) -> list[tuple[int, bytes]]:
    """The oldest changes kept for ``table``, in the order they were read: (id, body), as many as
    fit in ``max_bytes`` (at least one)."""
    rows = conn.execute(
        sql.SQL(
            "SELECT id, body FROM (SELECT id, body, sum(length(body)) OVER (ORDER BY id) - length(body) AS before"
            " FROM {} WHERE table_name = %s ORDER BY id LIMIT 10000) c WHERE before < %s ORDER BY id"
        ).format(qualified(schema, "changes")),
        [table, max_bytes],
    ).fetchall()
    return [(int(change_id), bytes(body)) for change_id, body in rows]


def drop_changes(conn: psycopg.Connection[Any], schema: str, change_ids: list[int]) -> None:
    """In the transaction that applied them."""
    conn.execute(sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(qualified(schema, "changes")), [change_ids])
