"""The dry run: `migrate` without a PostgreSQL URL prints a psql script, and psql running it gives
the same tables as a direct migrate (columns, types, indexes, every row)."""

from __future__ import annotations

import random
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from tests.moto_migrate import (
    Migrator,
    assert_ok,
    create_table,
    every_type,
    put_items,
    run_psql,
    table_columns,
    table_indexes,
    table_rows,
)


def test_dry_run_script_loads_the_same_tables(
    migrate: Migrator, dynamodb: Any, pg: psycopg.Connection[TupleRow], pg_dsn: str
) -> None:
    rng = random.Random(21)
    create_table(
        dynamodb,
        "events",
        [("device", "S"), ("ts", "N")],
        gsis={"by_day": [("day", "N"), ("ts", "N")]},
        lsis={"by_kind": ("kind", "S")},
    )
    events = []
    for i in range(300):
        item = every_type(rng, i) | {"device": {"S": f"dev{i % 10}"}, "ts": {"N": str(i * 7 + 1)}}
        item["kind"] = {"S": ["click", "view"][i % 2]}
        item["day"] = {"N": str(i % 3)}
        events.append(item)
    create_table(dynamodb, "blobs", [("owner", "S"), ("id", "B")])
    blobs = [
        {"owner": {"S": f"o{i % 3}"}, "id": {"B": bytes([i, 0, 255 - i])}, "body": {"S": "tab\there\nline\\"}}
        | ({"extra": {"N": str(i)}} if i % 2 else {})
        for i in range(40)
    ]
    put_items(dynamodb, "events", events)
    put_items(dynamodb, "blobs", blobs)

    dry = migrate.schema("dry")
    printed = migrate(no_url=True, target=dry)
    assert_ok(printed)
    assert "dry run" in printed.err, printed
    assert printed.stdout.count("\\.\n") >= 2, printed
    assert "COPY" in printed.stdout and "CREATE INDEX" in printed.stdout
    loaded = run_psql(pg_dsn, printed.stdout)
    assert loaded.returncode == 0, loaded.stderr
    # Nothing of podyn-fast's state: the script creates the tables and nothing else.
    assert pg.execute("SELECT to_regnamespace(%s)", [migrate.state]).fetchone() == (None,)

    # One segment and one worker: columns are created in the same order as the dry run's.
    assert_ok(migrate("--segments", "1", "--workers", "1"))
    for table, count in (("events", len(events)), ("blobs", len(blobs))):
        assert table_columns(pg, dry, table) == table_columns(pg, migrate.target, table), table
        direct = table_rows(pg, migrate.target, table)
        assert len(direct) == count
        assert table_rows(pg, dry, table) == direct, table
    assert table_indexes(pg, dry) == table_indexes(pg, migrate.target)
    assert len(table_indexes(pg, dry)) == 4  # two primary keys, an LSI and a GSI


def test_dry_run_jsonb_mode_and_rejects(
    migrate: Migrator, dynamodb: Any, pg: psycopg.Connection[TupleRow], pg_dsn: str
) -> None:
    create_table(dynamodb, "docs", [("pk", "S")])
    items = [{"pk": {"S": f"k{i}"}, "body": {"M": {"i": {"N": str(i)}, "s": {"S": f"é\t{i}"}}}} for i in range(30)]
    items.append({"pk": {"S": "bad"}, "body": {"S": "nul\x00inside"}})
    put_items(dynamodb, "docs", items)

    dry = migrate.schema("dry")
    printed = migrate("-m", "jsonb", no_url=True, target=dry)
    # The item PostgreSQL cannot store is named and left out; the exit code says so.
    assert printed.returncode == 1, printed
    assert '"bad"' in printed.err and "U+0000" in printed.err, printed
    assert "30 items" in printed.err
    loaded = run_psql(pg_dsn, printed.stdout)
    assert loaded.returncode == 0, loaded.stderr
    direct = migrate("-m", "jsonb", "--segments", "1", "--workers", "1")
    assert direct.returncode == 1  # the same reject
    assert (
        table_columns(pg, dry, "docs")
        == table_columns(pg, migrate.target, "docs")
        == [("pk", "text"), ("data", "jsonb")]
    )
    assert table_rows(pg, dry, "docs") == table_rows(pg, migrate.target, "docs")
    assert len(table_rows(pg, dry, "docs")) == 30


def test_follow_needs_a_url(migrate: Migrator) -> None:
    run = migrate("--follow", no_url=True, env={})
    assert run.returncode == 2, run
    assert "--follow needs a PostgreSQL URL" in run.err, run
    assert run.stdout == ""
