"""Applying collapsed stream batches: whole-row upserts and deletes, in the caller's transaction.

Rows arrive as binary COPY data (from the Rust core) into temporary tables dropped at commit, then
one ``INSERT … ON CONFLICT DO UPDATE`` replaces whole rows (an attribute missing from the new
image becomes NULL) and one ``DELETE … USING`` removes keys: two statements per batch, not one
per record.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import count
from typing import Any

import psycopg
from psycopg import sql

from podyn_fast._core import Layout, StreamBatch
from podyn_fast.postgres.copy import copy_rows
from podyn_fast.postgres.ddl import key_column_names

_names = count()


def apply(
    cur: psycopg.Cursor[Any], schema: str, table: str, layout: Layout, batches: Sequence[StreamBatch]
) -> tuple[int, int]:
    """Apply batches (already collapsed per key, and on disjoint keys or in order) to
    ``schema.table``; returns (rows upserted, rows deleted)."""
    target = sql.Identifier(schema, table)
    columns = layout.column_names
    keys = key_column_names(layout)
    upserted = deleted = 0
    for batch in batches:
        if batch.upserts.row_count:
            temp = f"pf_upsert_{next(_names)}"
            cur.execute(
                sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
                    sql.Identifier(temp), sql.SQL(", ").join(map(sql.Identifier, columns)), target
                )
            )
            copy_rows(cur, "pg_temp", temp, columns, [batch.upserts.rows])
            others = [c for c in columns if c not in keys]
            action = (
                sql.SQL("DO UPDATE SET {}").format(
                    sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in others)
                )
                if others
                else sql.SQL("DO NOTHING")  # a table of keys only: the row is already whole
            )
            cur.execute(
                sql.SQL("INSERT INTO {t} ({c}) SELECT {c} FROM {temp} ON CONFLICT ({k}) {action}").format(
                    t=target,
                    c=sql.SQL(", ").join(map(sql.Identifier, columns)),
                    temp=sql.Identifier(temp),
                    k=sql.SQL(", ").join(map(sql.Identifier, keys)),
                    action=action,
                )
            )
            upserted += batch.upserts.row_count
        if batch.delete_count:
            temp = f"pf_delete_{next(_names)}"
            cur.execute(
                sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
                    sql.Identifier(temp), sql.SQL(", ").join(map(sql.Identifier, keys)), target
                )
            )
            copy_rows(cur, "pg_temp", temp, keys, [batch.deletes])
            cur.execute(
                sql.SQL("DELETE FROM {t} USING {temp} d WHERE {match}").format(
                    t=target,
                    temp=sql.Identifier(temp),
                    match=sql.SQL(" AND ").join(
                        sql.SQL("{t}.{k} = d.{k}").format(t=target, k=sql.Identifier(k)) for k in keys
                    ),
                )
            )
            deleted += batch.delete_count
    return upserted, deleted
