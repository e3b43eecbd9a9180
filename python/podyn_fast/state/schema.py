"""The state schema itself: its tables, created or upgraded, and the lock that serialises setup."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from podyn_fast.errors import NoState

# Serialises creating the state schema and registering tables: two runs starting at once must
# not both CREATE the same objects.
_SETUP_LOCK = "podyn-fast setup"


def qualified(schema: str, table: str) -> sql.Composed:
    """``schema.table``, both quoted."""
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


def setup_lock(conn: psycopg.Connection[Any]) -> None:
    """Serialise DDL with other podyn-fast processes until the caller's transaction ends:
    ``CREATE … IF NOT EXISTS`` run concurrently can still fail on the catalogs' unique indexes."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [_SETUP_LOCK])


def require_schema(conn: psycopg.Connection[Any], schema: str) -> None:
    """Raise NoState unless ``schema`` holds podyn-fast's state (for the commands that only read
    it); a state schema an older version made gains the columns added since, which they read."""
    if conn.execute("SELECT to_regclass(%s)", [qualified(schema, "tables").as_string(conn)]).fetchone() == (None,):
        raise NoState(schema)
    with conn.transaction():
        setup_lock(conn)
        _upgrade(conn, schema)


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
                loaded_at timestamptz,
                load_started_at timestamptz,
                source text)""",
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
                    tables=qualified(schema, "tables"),
                    columns=qualified(schema, "columns"),
                    segments=qualified(schema, "segments"),
                    rejects=qualified(schema, "rejects"),
                    shards=qualified(schema, "shards"),
                    changes=qualified(schema, "changes"),
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
        "load_started_at": "timestamptz",
        "source": "text",
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
                        qualified(schema, table), sql.Identifier(column), sql.SQL(ty)
                    )
                )
