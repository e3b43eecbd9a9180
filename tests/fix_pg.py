"""PostgreSQL fixtures: a server per session, and a fresh schema and connection per test."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import TupleRow

from podyn_fast import state
from podyn_fast.embedded.postgres import EmbeddedPostgres

CITUS_DSN = os.environ.get("PODYN_TEST_CITUS_DSN")
"""A real Citus cluster's coordinator, when one is at hand (Citus cannot be installed here)."""


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """The DSN of the test server: a Citus coordinator's from ``PODYN_TEST_CITUS_DSN`` (then every
    migrate in the suite runs with ``--citus``), else ``PODYN_TEST_DSN``, else an embedded server
    for the session.

    Never skips: without PostgreSQL binaries EmbeddedPostgres raises, and every test using it errors.
    """
    dsn = CITUS_DSN or os.environ.get("PODYN_TEST_DSN")
    if dsn:
        yield dsn
        return
    with EmbeddedPostgres() as server:
        yield server.dsn


@contextmanager
def own_schema(dsn: str, label: str) -> Iterator[str]:
    """A schema made for one test alone, named after ``label``, dropped with everything in it
    afterwards."""
    # Readable in the server's log and pg_namespace, lower case so raw SQL needs no quoting, and
    # unique across concurrent sessions sharing one PODYN_TEST_DSN; 63 bytes is the identifier limit.
    slug = re.sub(r"[^a-z0-9_]+", "_", label.lower())[:40].strip("_")
    name = f"t_{slug}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def pg_schema(pg_dsn: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """The name of a schema made for this test alone (``own_schema``)."""
    with own_schema(pg_dsn, request.node.name) as name:
        yield name


@pytest.fixture
def pg_schema_dsn(pg_dsn: str, pg_schema: str) -> str:
    """A DSN whose sessions start in pg_schema: for code under test that opens its own connections."""
    return make_conninfo(pg_dsn, options=f"-c search_path={pg_schema}")


@pytest.fixture
def pg(pg_dsn: str, pg_schema: str) -> Iterator[psycopg.Connection[TupleRow]]:
    """An autocommit connection whose search_path is this test's own schema (see pg_schema)."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(pg_schema)))
        yield conn


@pytest.fixture
def schemas(pg_dsn: str) -> Iterator[tuple[str, str]]:
    """A target schema and a state schema of this test's own, for `podyn-fast migrate` to create;
    dropped with everything in them afterwards."""
    tag = uuid.uuid4().hex[:8]
    target, state_schema = f"m_{tag}", f"m_{tag}_state"
    yield target, state_schema
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for name in (target, state_schema):
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def committed_items(dsn: str, state_schema: str, table: str) -> int:
    """Items a load of ``table`` has committed so far (0 before its state schema exists)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            return state.progress(conn, state_schema, table).items
        except psycopg.errors.UndefinedTable:
            return 0


def segment_holders(dsn: str, state_schema: str) -> list[str]:
    """The owner of each segment (or export data file) held now (none before the state schema
    exists)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            rows = conn.execute(
                sql.SQL("SELECT owner FROM {} WHERE owner IS NOT NULL AND NOT done").format(
                    sql.Identifier(state_schema, "segments")
                )
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            return []
    return [owner for (owner,) in rows]


def applied_records(dsn: str, state_schema: str) -> int:
    """Stream records the followers of ``state_schema`` have committed so far."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            row = conn.execute(
                sql.SQL("SELECT coalesce(sum(records), 0) FROM {}").format(sql.Identifier(state_schema, "shards"))
            ).fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
    return int(row[0]) if row else 0
