"""Planning a table: from DescribeTable to the target table (keys, index keys, first columns, names),
its state row and DDL; and finishing it after the load (deferred primary key, indexes)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from podyn_fast import state
from podyn_fast._core import Layout, column_type, fit_ident, key_columns
from podyn_fast.dynamo.tables import SourceTable
from podyn_fast.errors import MigrateError
from podyn_fast.postgres import citus, ddl
from podyn_fast.settings import MigrateConfig


def initial_columns(source: SourceTable, *, lower_case: bool) -> list[tuple[str, str, str]]:
    """The first registry entries: the key columns, then the key attributes of every index
    (typed from AttributeDefinitions), so the indexes can be built on them."""
    keys = key_columns(source.keys, lower_case=lower_case)
    layout = Layout(source.keys, keys, lower_case=lower_case)
    index_attrs: list[tuple[str, str]] = []
    for _, attrs in source.indexes:
        for attr, ty in attrs:
            pair = (attr, column_type(ty) or "text")
            if pair not in index_attrs:
                index_attrs.append(pair)
    return keys + layout.plan_columns(index_attrs)


def index_name(target_table: str, index: str) -> str:
    """A name unique in the schema and within 63 bytes.

    Index names share one namespace with every table and index of the schema, and
    ``CREATE INDEX IF NOT EXISTS`` silently skips a taken name; ``table_index`` alone is ambiguous
    (``a_b`` + ``c`` vs ``a`` + ``b_c``) and may be a table's ``_pkey``. A hash of the pair keeps
    it unique and deterministic.
    """
    digest = hashlib.sha1(f"{target_table}\x00{index}".encode(), usedforsecurity=False).hexdigest()[:8]
    readable = f"{target_table}_{index}".encode()[: 63 - 9].decode("utf-8", "ignore")
    return f"{readable}_{digest}"


def target_table_name(dynamo_name: str) -> str:
    """The PostgreSQL name of a DynamoDB table: the same, fitted to 63 bytes (DynamoDB allows 255;
    PostgreSQL would cut it silently, and two long names could then land in one table)."""
    return fit_ident(dynamo_name)


def document_column(columns: Sequence[tuple[str, str, str]]) -> str:
    """The jsonb mode's whole-item column: ``data``, unless a key attribute already has that name."""
    taken = {c for _, _, c in columns}
    name, n = "data", 2
    while name in taken:
        name, n = f"data_{n}", n + 1
    return name


def default_segments(source: SourceTable, workers: int) -> int:
    """Enough segments to keep every worker busy and each segment a manageable size (≈ 64 MiB):
    a table of a few GB gets a hundred or so; DynamoDB allows up to 1,000,000."""
    by_size = -(-source.size_bytes // (64 << 20))
    return max(1, min(1000, max(by_size, 4 * workers)))


def wanted_state(
    cfg: MigrateConfig, source: SourceTable, *, defer_primary_key: bool = False
) -> tuple[state.TableState, list[tuple[str, str, str]]]:
    """The state a first run records for ``source`` with these settings, and its first columns."""
    columns = initial_columns(source, lower_case=cfg.lower_case)
    wanted = state.TableState(
        table_name=source.name,
        target_schema=cfg.target_schema,
        target_table=target_table_name(source.name),
        mode=cfg.mode,
        lower_case=cfg.lower_case,
        keys=source.keys,
        indexes=source.indexes,
        total_segments=len(source.export.files)
        if source.export
        else cfg.segments or default_segments(source, cfg.workers),
        deferred_primary_key=defer_primary_key,
        phase="loading",
        document_column=document_column(columns) if cfg.mode == "jsonb" else None,
        source=source.export.location.url if source.export else None,
    )
    return wanted, columns


def index_statements(table: state.TableState, layout: Layout) -> list[sql.Composed]:
    """``CREATE INDEX`` for each secondary index, on the columns of its key attributes."""
    by_attr = {(a, t): c for a, t, c in layout.columns}
    return [
        ddl.create_index(
            table.target_schema,
            table.target_table,
            index_name(table.target_table, index),
            [by_attr[(a, column_type(t) or "text")] for a, t in attrs],
        )
        for index, attrs in table.indexes
    ]


def defer_primary_key(conn: psycopg.Connection[Any], cfg: MigrateConfig, source: SourceTable) -> bool:
    """Whether a table's first run builds its primary key after the load: as ``--defer-primary-key``
    or ``--no-defer-primary-key`` say, else when this run loads a table larger than the server's
    shared_buffers. Past that size the key's btree outgrows PostgreSQL's buffers (and, on a server
    with less memory than the table, the page cache): each row, in a Scan's hash order, lands at a
    random place of it, where one sorted build after the load reads nothing twice (docs/postgres.md
    has the figures). Only the first run decides."""
    if cfg.defer_primary_key is not None:
        return cfg.defer_primary_key
    if not cfg.load:
        return False  # -s alone: the table is created for someone else to fill
    row = conn.execute("SELECT pg_size_bytes(current_setting('shared_buffers'))").fetchone()
    return row is not None and source.size_bytes > int(row[0])


def plan(conn: psycopg.Connection[Any], cfg: MigrateConfig, source: SourceTable) -> state.TableState:
    """Describe the table, record it in the state schema (first run only) and create its target
    table. A rerun with other settings than the first is refused rather than mixed."""
    name = source.name
    wanted, columns = wanted_state(cfg, source, defer_primary_key=defer_primary_key(conn, cfg, source))
    recorded = state.register_table(
        conn, cfg.state_schema, wanted, columns, item_count=source.item_count, size_bytes=source.size_bytes
    )
    for attr, mine, theirs in (
        ("mode", wanted.mode, recorded.mode),
        ("lower_case", wanted.lower_case, recorded.lower_case),
        ("target_schema", wanted.target_schema, recorded.target_schema),
        ("keys", wanted.keys, recorded.keys),
        ("its snapshot from", wanted.source or "a Scan", recorded.source or "a Scan"),
    ):
        if mine != theirs:
            raise MigrateError(
                f"table {name!r} was first migrated with {attr}={theirs!r}, this run asks for {mine!r}: "
                f"run with the same settings to resume, or drop the target table and delete its rows from "
                f"{cfg.state_schema}.tables to start over"
            )
    if cfg.segments is not None and cfg.segments != recorded.total_segments:
        raise MigrateError(
            f"table {name!r} is being loaded with {recorded.total_segments} segments (fixed at its first run); "
            f"drop --segments or set it to {recorded.total_segments}"
        )
    layout = state.layout(conn, cfg.state_schema, recorded)
    with conn.transaction():
        state.setup_lock(conn)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(recorded.target_schema)))
        target = sql.Identifier(recorded.target_schema, recorded.target_table).as_string(conn)
        existed = conn.execute("SELECT to_regclass(%s)", [target]).fetchone() != (None,)
        conn.execute(
            ddl.create_table(
                recorded.target_schema, recorded.target_table, layout, primary_key=not recorded.deferred_primary_key
            )
        )
        if existed:
            _check_compatible(conn, recorded, layout)
        if cfg.citus and not existed:
            # In the transaction that creates it: a table is never left created but not distributed.
            conn.execute(ddl.distribute(recorded.target_schema, recorded.target_table, layout))
        elif cfg.citus and not citus.distributed(conn, recorded.target_schema, recorded.target_table):
            target = f"{recorded.target_schema}.{recorded.target_table}"
            how = ddl.distribute(recorded.target_schema, recorded.target_table, layout).as_string(conn)
            raise MigrateError(
                f"--citus: target table {target} exists and is not distributed (made by a run without --citus): "
                f"distribute it with {how}, or drop it, then run again"
            )
    return recorded


def _check_compatible(conn: psycopg.Connection[Any], table: state.TableState, layout: Layout) -> None:
    """A target table that exists already must have every column of the layout, of its type: else
    it is someone else's table (or from another tool), and loading into it would fail or mix data."""
    found = dict(
        conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            [sql.Identifier(table.target_schema, table.target_table).as_string(conn)],
        ).fetchall()
    )
    wanted = [(c, t) for _, t, c in layout.columns] + ([(layout.document, "jsonb")] if layout.document else [])
    for column, ty in wanted:
        if found.get(column) != ty:
            has = f"is {found[column]}" if column in found else "is missing"
            raise MigrateError(
                f"target table {table.target_schema}.{table.target_table} exists but does not fit DynamoDB table "
                f"{table.table_name!r}: column {column!r} {has}, {ty} expected; drop or rename it, or load into "
                f"another schema with --target-schema"
            )


def finish(conn: psycopg.Connection[Any], cfg: MigrateConfig, table: state.TableState) -> None:
    """After the last segment: the primary key if it was deferred, then the secondary indexes
    (built once over all rows, as pg_restore does), then the phase."""
    layout = state.layout(conn, cfg.state_schema, table)
    with conn.transaction():
        state.setup_lock(conn)
        if table.deferred_primary_key:
            has_pk = conn.execute(
                "SELECT 1 FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'p'",
                [sql.Identifier(table.target_schema, table.target_table).as_string(conn)],
            ).fetchone()
            if not has_pk:
                conn.execute(ddl.add_primary_key(table.target_schema, table.target_table, layout))
        for statement in index_statements(table, layout):
            conn.execute(statement)
    state.set_phase(conn, cfg.state_schema, table.table_name, "loaded")
