"""Citus specifics shared by the loaders and the follower."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql


def installed(conn: psycopg.Connection[Any]) -> bool:
    """Whether the database has Citus (its create_distributed_table)."""
    row = conn.execute("SELECT to_regproc('create_distributed_table') IS NOT NULL").fetchone()
    return bool(row and row[0])


def distributed(conn: psycopg.Connection[Any], schema: str, table: str) -> bool:
    """Whether ``schema.table`` is a Citus distributed (or reference) table."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = %s::regclass)",
        [sql.Identifier(schema, table).as_string(conn)],
    ).fetchone()
    return bool(row and row[0])


def one_connection_per_node(cur: psycopg.Cursor[Any]) -> None:
    """For the rest of the transaction: a statement on a distributed table opens a connection per
    shard by default, which many workers multiply past what the Citus workers allow; one per
    worker node is enough to stream."""
    cur.execute("SET LOCAL citus.max_adaptive_executor_pool_size = 1")
