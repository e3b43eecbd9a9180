"""Where each table stands (`podyn-fast status`), read from the state schema alone.

Every loader and follower, on any host, records its progress there, so any machine that reaches
the database can answer; nothing asks the processes themselves. A follower records its lag every
few seconds: a record older than a minute means no follower is running.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from podyn_fast.state.schema import qualified, require_schema

# A follower heartbeat older than this means no follower runs for the table.
FOLLOWER_GONE = 60.0


@dataclass
class TableStatus:
    table: str
    target: str
    phase: str
    """loading, loaded, following, or stopped (a gap in the stream: the reason is in last_error)."""
    segments_done: int
    segments_total: int
    items: int
    item_count_estimate: int | None
    rejects: int
    bytes: int
    shards_open: int
    shards_finished: int
    changes_applied: int
    lag_seconds: float | None
    """The follower's lag, when one runs (0 once it has read every shard to its head)."""
    follower_seen_seconds_ago: float | None
    last_error: str | None
    last_error_at: str | None
    source: str | None
    """The export its snapshot comes from (its segments are the export's data files); None: a Scan."""


_QUERY = """
SELECT t.table_name, t.target_schema, t.target_table, t.phase, t.stopped, t.item_count_estimate,
       t.last_error, t.last_error_at, t.follow_lag, extract(epoch FROM now() - t.follow_heartbeat),
       coalesce(s.done, 0), coalesce(s.total, 0), coalesce(s.items, 0), coalesce(s.bytes, 0),
       (SELECT count(*) FROM {rejects} r WHERE r.table_name = t.table_name),
       coalesce(h.open, 0), coalesce(h.finished, 0), coalesce(h.records, 0), t.source
FROM {tables} t
LEFT JOIN (SELECT table_name, count(*) FILTER (WHERE done) AS done, count(*) AS total,
                  sum(items) AS items, sum(bytes) AS bytes
           FROM {segments} GROUP BY table_name) s USING (table_name)
LEFT JOIN (SELECT table_name, stream_arn, count(*) FILTER (WHERE NOT finished) AS open,
                  count(*) FILTER (WHERE finished) AS finished, sum(records) AS records
           FROM {shards} GROUP BY table_name, stream_arn) h
       ON h.table_name = t.table_name AND h.stream_arn = t.stream_arn
WHERE cardinality(%(tables)s::text[]) = 0 OR t.table_name = ANY(%(tables)s)
ORDER BY t.table_name
"""


def read(conn: psycopg.Connection[Any], schema: str, tables: Sequence[str] = ()) -> list[TableStatus]:
    """The status of ``tables`` (all when empty) recorded in the state schema ``schema``."""
    require_schema(conn, schema)
    query = sql.SQL(_QUERY).format(
        **{name: qualified(schema, name) for name in ("tables", "segments", "shards", "rejects")}
    )
    out = []
    for row in conn.execute(query, {"tables": list(tables)}).fetchall():
        (name, target_schema, target_table, phase, stopped, estimate, error, error_at, lag, seen) = row[:10]
        done, total, items, nbytes, rejects, shards_open, shards_finished, records, source = row[10:]
        alive = seen is not None and float(seen) < FOLLOWER_GONE
        out.append(
            TableStatus(
                table=name,
                target=f"{target_schema}.{target_table}",
                phase="stopped" if stopped else phase,
                segments_done=int(done),
                segments_total=int(total),
                items=int(items),
                item_count_estimate=int(estimate) if estimate is not None else None,
                rejects=int(rejects),
                bytes=int(nbytes),
                shards_open=int(shards_open),
                shards_finished=int(shards_finished),
                changes_applied=int(records),
                lag_seconds=float(lag) if alive and lag is not None else None,
                follower_seen_seconds_ago=float(seen) if seen is not None else None,
                last_error=stopped or error,
                last_error_at=error_at.isoformat() if error_at is not None and not stopped else None,
                source=source,
            )
        )
    return out
