"""Stream shards (``shards``): each shard's parent, the last sequence number applied and whether it
was read to its end, committed in the transaction of the changes it covers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from podyn_fast.state.schema import qualified


@dataclass(frozen=True)
class ShardCheckpoint:
    shard_id: str
    parent: str | None
    last_sequence: str | None
    finished: bool


def shards(conn: psycopg.Connection[Any], schema: str, table: str, stream_arn: str) -> list[ShardCheckpoint]:
    """The checkpoints of the shards of ``table``'s stream ``stream_arn``."""
    rows = conn.execute(
        sql.SQL(
            "SELECT shard_id, parent_shard_id, last_sequence, finished FROM {}"
            " WHERE table_name = %s AND stream_arn = %s"
        ).format(qualified(schema, "shards")),
        [table, stream_arn],
    ).fetchall()
    return [ShardCheckpoint(str(s), p, q, bool(f)) for s, p, q, f in rows]


def checkpoint_shard(
    conn: psycopg.Connection[Any],
    schema: str,
    table: str,
    stream_arn: str,
    shard: ShardCheckpoint,
    *,
    records: int,
    last_created: float | None,
) -> None:
    """Record where ``shard`` stands, adding ``records`` to its count; in the caller's transaction."""
    conn.execute(
        sql.SQL(
            "INSERT INTO {} AS s (table_name, stream_arn, shard_id, parent_shard_id, last_sequence, finished,"
            " records, last_created) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (table_name, stream_arn, shard_id) DO UPDATE SET last_sequence = EXCLUDED.last_sequence,"
            " finished = EXCLUDED.finished, records = s.records + EXCLUDED.records,"
            " last_created = coalesce(EXCLUDED.last_created, s.last_created), updated_at = now()"
        ).format(qualified(schema, "shards")),
        [table, stream_arn, shard.shard_id, shard.parent, shard.last_sequence, shard.finished, records, last_created],
    )
