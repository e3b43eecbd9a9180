"""Helpers and the ``migrate`` fixture for tests that run `podyn-fast migrate` against moto: the
command as a user runs it (a subprocess, fake AWS credentials, its own target and state schemas),
tables and items on the DynamoDB side, and what to compare on the PostgreSQL side. A pytest plugin
(see conftest.py), so every test module can take the ``migrate`` fixture.
"""

from __future__ import annotations

import base64
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from podyn_fast import _core
from podyn_fast.embedded.postgres import find_bindir
from tests import reference
from tests.fix_dynamo import REGION
from tests.fix_pg import CITUS_DSN
from tests.reference import NUMBERS, STRINGS

PODYN = str(Path(sys.executable).parent / "podyn-fast")
# Rich colours nothing when stderr is a pipe, but a developer's FORCE_COLOR would; strip it anyway.
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# The PostgreSQL URL may come from these: each run sets them explicitly or not at all.
_URL_ENV = ("PODYN_POSTGRES_URL", "DATABASE_URL")
MAX_IDENT_BYTES = reference.MAX_IDENT_BYTES
# A run here takes a few seconds; a hung one fails the test rather than the whole session.
RUN_TIMEOUT = 60

Item = dict[str, Any]


# --------------------------------------------------------------------------------------------
# Running the command


@dataclass
class Run:
    """One finished `podyn-fast migrate`."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def text(self) -> str:
        """stdout and stderr with rich's line wrapping (to 80 columns on a pipe) undone."""
        return " ".join(_ANSI.sub("", f"{self.stdout}\n{self.stderr}").split())

    @property
    def err(self) -> str:
        """stderr alone, unwrapped like ``text``."""
        return " ".join(_ANSI.sub("", self.stderr).split())

    def __str__(self) -> str:
        return f"exit {self.returncode} after {self.seconds:.1f}s\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


@dataclass
class Migrator:
    """Runs `podyn-fast migrate` against moto, by default into this test's target and state schemas."""

    dsn: str
    endpoint: str
    target: str
    state: str
    extra_schemas: list[str] = field(default_factory=list)

    def schema(self, suffix: str) -> str:
        """Another schema name of this test's own (dropped at its end)."""
        name = f"{self.target}_{suffix}"
        assert len(name.encode()) <= MAX_IDENT_BYTES, name
        self.extra_schemas.append(name)
        return name

    def command(
        self,
        *,
        url: str | None = None,
        no_url: bool = False,
        target: str | None = None,
        state: str | None = None,
        root_args: Sequence[str] = (),
    ) -> list[str]:
        """The migrate command line, up to the test's own arguments."""
        argv = [
            PODYN,
            *root_args,
            "migrate",
            "--endpoint-url",
            self.endpoint,
            "--region",
            REGION,
            "--target-schema",
            target or self.target,
            "--state-schema",
            state or self.state,
            "--no-progress",
        ]
        if not no_url:
            argv += ["--postgres-url", url or self.dsn]
        if CITUS_DSN:
            argv.append("--citus")
        return argv

    def __call__(
        self,
        *args: str,
        url: str | None = None,
        no_url: bool = False,
        env: Mapping[str, str] | None = None,
        target: str | None = None,
        state: str | None = None,
        root_args: Sequence[str] = (),
    ) -> Run:
        """Run migrate with ``args``; ``--postgres-url`` is this server's DSN (or ``url``) unless ``no_url``."""
        argv = self.command(url=url, no_url=no_url, target=target, state=state, root_args=root_args)
        environ = {k: v for k, v in os.environ.items() if k not in _URL_ENV}
        environ.update(env or {})
        started = time.monotonic()
        # Its own session, so that on a timeout its loader processes go too (they hold the pipes).
        process = subprocess.Popen(
            argv + list(args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environ,
            start_new_session=True,
        )
        try:
            stdout, stderr = process.communicate(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            pytest.fail(f"migrate did not finish within {RUN_TIMEOUT}s\nstdout:\n{stdout}\nstderr:\n{stderr}")
        return Run(process.returncode, stdout, stderr, time.monotonic() - started)


@pytest.fixture
def migrate(pg_dsn: str, pg_schema: str, moto_endpoint: str, dynamodb: Any) -> Iterator[Migrator]:
    """A Migrator on this test's schemas (target: pg_schema; state: pg_schema + "_state"), with
    moto reset (through ``dynamodb``); drops the state schema and any extra schema at the end."""
    m = Migrator(pg_dsn, moto_endpoint, target=pg_schema, state=f"{pg_schema}_state")
    yield m
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for name in [m.state, *m.extra_schemas]:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def assert_ok(run: Run) -> None:
    assert run.returncode == 0, str(run)
    assert "Traceback" not in run.text, str(run)


def assert_refused(run: Run, *phrases: str, code: int = 1) -> None:
    """The command failed with ``code``, a message holding every phrase, and no traceback."""
    assert run.returncode == code, str(run)
    assert "Traceback" not in run.text, str(run)
    assert "error:" in run.text, str(run)
    for phrase in phrases:
        assert phrase in run.text, f"{phrase!r} not in the output:\n{run}"


# --------------------------------------------------------------------------------------------
# DynamoDB side


def create_table(
    dynamodb: Any,
    name: str,
    keys: Sequence[tuple[str, str]],
    *,
    gsis: Mapping[str, Sequence[tuple[str, str]]] | None = None,
    lsis: Mapping[str, tuple[str, str]] | None = None,
) -> None:
    """A table with ``keys`` (partition key first), GSIs by name (their key attributes) and LSIs
    by name (their sort key attribute)."""
    gsis, lsis = gsis or {}, lsis or {}
    types = dict(keys)
    for attrs in gsis.values():
        types.update(attrs)
    types.update(lsis.values())

    def schema(attrs: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
        return [{"AttributeName": a, "KeyType": kind} for (a, _), kind in zip(attrs, ["HASH", "RANGE"], strict=False)]

    extra: dict[str, Any] = {}
    if gsis:
        extra["GlobalSecondaryIndexes"] = [
            {"IndexName": n, "KeySchema": schema(a), "Projection": {"ProjectionType": "ALL"}} for n, a in gsis.items()
        ]
    if lsis:
        extra["LocalSecondaryIndexes"] = [
            {"IndexName": n, "KeySchema": schema([keys[0], a]), "Projection": {"ProjectionType": "ALL"}}
            for n, a in lsis.items()
        ]
    dynamodb.create_table(
        TableName=name,
        KeySchema=schema(keys),
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": t} for a, t in types.items()],
        BillingMode="PAY_PER_REQUEST",
        **extra,
    )


def put_items(dynamodb: Any, table: str, items: Sequence[Item]) -> None:
    """Write items as boto3 takes them (B as bytes)."""
    for start in range(0, len(items), 25):
        batch = [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
        response = dynamodb.batch_write_item(RequestItems={table: batch})
        assert response["UnprocessedItems"] == {}


def wire(typed: Mapping[str, Any]) -> dict[str, Any]:
    """A value as botocore parsed it (B as bytes) back to its wire form (B as base64 text)."""
    ((tag, v),) = typed.items()
    if tag == "B":
        return {"B": base64.b64encode(v).decode("ascii")}
    if tag == "BS":
        return {"BS": [base64.b64encode(x).decode("ascii") for x in v]}
    if tag == "L":
        return {"L": [wire(x) for x in v]}
    if tag == "M":
        return {"M": {k: wire(x) for k, x in v.items()}}
    return {tag: v}


def has_nul(value: Any) -> bool:
    """Whether U+0000 is anywhere in a value: a string, a map key, an element."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(map(has_nul, value))
    return False


def source_items(dynamodb: Any, table: str) -> list[Item]:
    """Every item of ``table`` through boto3's own Scan and parser, in wire form: the independent path."""
    items: list[Item] = []
    for page in dynamodb.get_paginator("scan").paginate(TableName=table):
        items += [{k: wire(v) for k, v in item.items()} for item in page["Items"]]
    return items


# Attribute names: SQL words, quotes, spaces, non-ASCII, two longer than 63 bytes sharing a prefix.
NAMES = ["v", "select", 'a"b', "with space", "dot.ted", "名前", "Mixed", "x" * 80 + "1", "x" * 80 + "2"]


def random_value(rng: random.Random, depth: int = 0, names: Sequence[str] = NAMES) -> dict[str, Any]:
    """A random typed value as boto3 takes it (B as bytes); map keys from ``names``."""
    make: dict[str, Any] = {
        "S": lambda: rng.choice(STRINGS),
        "N": lambda: rng.choice(NUMBERS),
        "B": lambda: rng.randbytes(rng.randrange(0, 6)),
        "BOOL": lambda: rng.random() < 0.5,
        "NULL": lambda: True,
        "SS": lambda: rng.sample([s for s in STRINGS if s], rng.randrange(1, 4)),
        "NS": lambda: rng.sample(["1", "2.5", "-3", "1E-130", "4e2"], rng.randrange(1, 4)),
        "BS": lambda: [bytes([i]) * rng.randrange(1, 4) for i in rng.sample(range(256), rng.randrange(1, 4))],
    }
    if depth < 3:
        make["L"] = lambda: [random_value(rng, depth + 1, names) for _ in range(rng.randrange(0, 4))]
        make["M"] = lambda: {rng.choice(names): random_value(rng, depth + 1, names) for _ in range(rng.randrange(0, 4))}
    kind = rng.choice(sorted(make))
    return {kind: make[kind]()}


def every_type(rng: random.Random, i: int) -> Item:
    """Attributes of every DynamoDB type (one attribute per type, so each surely has its column),
    ``ip`` as text in most items and BOOL in some (a type clash), and random extras."""
    item: Item = {
        "s": {"S": STRINGS[i % len(STRINGS)]},
        "n": {"N": NUMBERS[i % len(NUMBERS)]},
        "b": {"B": rng.randbytes(i % 5)},
        "flag": {"BOOL": i % 2 == 0},
        "nothing": {"NULL": True},
        "tags": {"SS": [f"t{j}" for j in range(1 + i % 3)]},
        "scores": {"NS": ["1E+2", "-0.5", str(i)][: 1 + i % 3]},
        "blobs": {"BS": [bytes([j, i % 256]) for j in range(1 + i % 3)]},
        "list": {"L": [random_value(rng, 1) for _ in range(i % 4)]},
        "map": {"M": {"nested": {"M": {"deep": random_value(rng, 2)}}, "n": {"N": NUMBERS[i % 7]}}},
        "ip": {"BOOL": True} if i % 7 == 3 else {"S": f"10.0.0.{i % 256}"},
    }
    for name in rng.sample(NAMES, rng.randrange(0, 4)):
        item[name] = random_value(rng)
    return item


# --------------------------------------------------------------------------------------------
# PostgreSQL side


def table_state(conn: psycopg.Connection[Any], state: str, table: str) -> dict[str, Any]:
    """The state schema's row for ``table``."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            sql.SQL("SELECT * FROM {}.tables WHERE table_name = %s").format(sql.Identifier(state)), [table]
        ).fetchone()
    assert row is not None, f"{table!r} is not in {state}.tables"
    return row


def registry(conn: psycopg.Connection[Any], state: str, table: str) -> list[tuple[str, str, str]]:
    """(attribute, column type, column name) in column order, from the state schema."""
    rows = conn.execute(
        sql.SQL(
            "SELECT attribute, column_type, column_name FROM {}.columns WHERE table_name = %s ORDER BY ordinal"
        ).format(sql.Identifier(state)),
        [table],
    ).fetchall()
    return [(a, t, c) for a, t, c in rows]


def recorded_layout(conn: psycopg.Connection[Any], state: str, table: str) -> tuple[_core.Layout, str, str]:
    """The layout the state schema recorded for ``table``, and its target schema and table."""
    row = table_state(conn, state, table)
    layout = _core.Layout(
        [(a, t) for a, t in row["keys"]],
        registry(conn, state, table),
        mode=row["mode"],
        document=row["document_column"],
    )
    return layout, row["target_schema"], row["target_table"]


def check_loaded(conn: psycopg.Connection[Any], state: str, table: str, items: Sequence[Item]) -> _core.Layout:
    """The target table of ``table`` holds exactly ``items`` (per the reference) and nothing else."""
    layout, schema, target = recorded_layout(conn, state, table)
    reference.check_table(conn, schema, target, layout, items)
    return layout


def column_of(layout: _core.Layout, attr: str, col_type: str) -> str:
    found = [c for a, t, c in layout.columns if (a, t) == (attr, col_type)]
    assert len(found) == 1, f"{attr!r} {col_type}: {found!r} in {layout.columns!r}"
    return found[0]


@dataclass(frozen=True)
class PgIndex:
    table: str
    name: str
    columns: tuple[str, ...]
    primary: bool


def pg_indexes(conn: psycopg.Connection[Any], schema: str) -> list[PgIndex]:
    """Every index in ``schema``, with its columns in index order."""
    rows = conn.execute(
        """SELECT t.relname, i.relname, array_agg(a.attname ORDER BY k.ord), ix.indisprimary
           FROM pg_index ix
           JOIN pg_class i ON i.oid = ix.indexrelid
           JOIN pg_class t ON t.oid = ix.indrelid
           JOIN pg_namespace n ON n.oid = t.relnamespace
           CROSS JOIN LATERAL unnest(ix.indkey) WITH ORDINALITY AS k(attnum, ord)
           JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
           WHERE n.nspname = %s
           GROUP BY t.relname, i.relname, ix.indisprimary""",
        [schema],
    ).fetchall()
    return [PgIndex(t, i, tuple(cols), primary) for t, i, cols, primary in rows]


def pg_tables(conn: psycopg.Connection[Any], schema: str) -> set[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relkind = 'r'",
        [schema],
    ).fetchall()
    return {r[0] for r in rows}


def not_null(conn: psycopg.Connection[Any], schema: str, table: str) -> set[str]:
    rows = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND attnotnull"
        " AND NOT attisdropped",
        [sql.Identifier(schema, table).as_string(conn)],
    ).fetchall()
    return {r[0] for r in rows}


def snapshot(conn: psycopg.Connection[Any], schema: str, table: str) -> list[str]:
    """Every row of a table as JSON text, sorted: equal snapshots mean equal contents."""
    rows = conn.execute(
        sql.SQL("SELECT row_to_json(t)::text FROM {}.{} t ORDER BY 1").format(
            sql.Identifier(schema), sql.Identifier(table)
        )
    ).fetchall()
    return [r[0] for r in rows]


def state_rows(conn: psycopg.Connection[Any], state: str, name: str) -> list[str]:
    """A state table's rows as JSON text, sorted."""
    rows = conn.execute(
        sql.SQL("SELECT row_to_json(t)::text FROM {}.{} t ORDER BY 1").format(
            sql.Identifier(state), sql.Identifier(name)
        )
    ).fetchall()
    return [r[0] for r in rows]


def expect_indexes(
    conn: psycopg.Connection[Any],
    state: str,
    table: str,
    indexes: Mapping[str, Sequence[tuple[str, str]]],
    found: Sequence[PgIndex],
) -> None:
    """``table``'s target has its primary key on the key columns (NOT NULL) and one index per
    DynamoDB index (name -> key attributes) on the columns of those attributes, and no other."""
    layout, schema, target = recorded_layout(conn, state, table)
    key_cols = tuple(column_of(layout, a, _core.column_type(t) or "") for a, t in layout.keys)
    mine = [ix for ix in found if ix.table == target]
    primary = [ix for ix in mine if ix.primary]
    assert [ix.columns for ix in primary] == [key_cols], mine
    assert set(key_cols) <= not_null(conn, schema, target)
    wanted = sorted(
        tuple(column_of(layout, a, _core.column_type(t) or "") for a, t in attrs) for attrs in indexes.values()
    )
    assert sorted(ix.columns for ix in mine if not ix.primary) == wanted, (table, mine)


def run_psql(dsn: str, script: str) -> subprocess.CompletedProcess[str]:
    """``script`` run by psql as a user would, stopping at the first error."""
    return subprocess.run(
        [str(find_bindir() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn],
        input=script,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def table_columns(conn: psycopg.Connection[Any], schema: str, table: str) -> list[tuple[str, str]]:
    return [
        (str(name), str(ty))
        for name, ty in conn.execute(
            "SELECT column_name, format_type(atttypid, atttypmod) FROM information_schema.columns c"
            " JOIN pg_attribute a ON a.attrelid = format('%%I.%%I', table_schema, table_name)::regclass"
            " AND a.attname = c.column_name"
            " WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            [schema, table],
        ).fetchall()
    ]


def table_rows(conn: psycopg.Connection[Any], schema: str, table: str) -> list[str]:
    # Every column's text, in a canonical order: identical tables give identical lists.
    return sorted(
        str(r[0])
        for r in conn.execute(
            sql.SQL("SELECT to_jsonb(t)::text FROM {}.{} t").format(sql.Identifier(schema), sql.Identifier(table))
        ).fetchall()
    )


def table_indexes(conn: psycopg.Connection[Any], schema: str) -> list[tuple[str, str]]:
    return sorted(
        (str(name), str(definition).replace(f'"{schema}".', "").replace(f"{schema}.", ""))
        for name, definition in conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s", [schema]
        ).fetchall()
    )
