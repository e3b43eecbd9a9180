"""Podyn's command line on `migrate` (-s/-d/-c/-x/-lc/-n), and `--citus`'s statements and their order.

Citus cannot be installed here: a stand-in ``create_distributed_table`` records each call (the
table's row count at that moment included) and puts a probe on the table that records the
``citus.*`` setting every COPY into it runs with.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import TupleRow

from tests.fix_dynamo import REGION
from tests.fix_pg import CITUS_DSN
from tests.moto_migrate import (
    PODYN,
    Migrator,
    assert_ok,
    assert_refused,
    check_loaded,
    create_table,
    put_items,
    source_items,
)

STAND_IN = """
CREATE TABLE public.citus_calls (rel text, col text, nrows bigint, at timestamptz DEFAULT clock_timestamp());
CREATE TABLE public.citus_copies (rel text, pool_size text);
CREATE TABLE public.pg_dist_partition (logicalrelid regclass);
CREATE FUNCTION public.citus_probe() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO public.citus_copies
    VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, current_setting('citus.max_adaptive_executor_pool_size', true));
  RETURN NULL;
END $$;
CREATE FUNCTION public.create_distributed_table(rel regclass, col text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE n bigint;
BEGIN
  EXECUTE format('SELECT count(*) FROM %s', rel) INTO n;
  INSERT INTO public.citus_calls (rel, col, nrows) VALUES (rel::text, col, n);
  INSERT INTO public.pg_dist_partition VALUES (rel);
  EXECUTE format('CREATE TRIGGER citus_probe AFTER INSERT ON %s'
    ' FOR EACH STATEMENT EXECUTE FUNCTION public.citus_probe()', rel);
END $$;
"""
DROP_STAND_IN = """
DROP FUNCTION IF EXISTS public.create_distributed_table(regclass, text);
DROP TABLE IF EXISTS public.citus_calls, public.citus_copies, public.pg_dist_partition;
DROP FUNCTION IF EXISTS public.citus_probe() CASCADE;
"""


@pytest.fixture
def citus_stand_in(pg_dsn: str) -> Iterator[None]:
    if CITUS_DSN:
        # A real Citus has the real function in pg_catalog, found before any stand-in: there, the
        # whole suite runs with --citus instead.
        pytest.skip("the stand-in checks the statements on plain PostgreSQL; this run has a real Citus")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(DROP_STAND_IN)
        conn.execute(STAND_IN)
    yield
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(DROP_STAND_IN)


def _items(n: int) -> list[dict[str, Any]]:
    return [{"Id": {"S": f"k{i}"}, "Sort": {"N": str(i)}, "Name": {"S": f"name {i}"}} for i in range(n)]


def _count(pg: psycopg.Connection[Any], schema: str, table: str) -> int:
    row = pg.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table)))
    return int(row.fetchone()[0])  # type: ignore[index]


def test_schema_then_data(migrate: Migrator, dynamodb: Any, pg: psycopg.Connection[TupleRow]) -> None:
    create_table(dynamodb, "t", [("Id", "S"), ("Sort", "N")])
    put_items(dynamodb, "t", _items(50))
    created = migrate("-s", "-t", "t")
    assert_ok(created)
    assert "created 1 table(s)" in created.err, created
    assert _count(pg, migrate.target, "t") == 0
    assert_ok(migrate("-d", "-t", "t"))
    check_loaded(pg, migrate.state, "t", source_items(dynamodb, "t"))


def test_changes_need_data(migrate: Migrator) -> None:
    run = migrate("-c")
    assert run.returncode == 2, run
    assert "-c/--changes without -d/--data" in run.err, run


def test_lower_case_and_num_connections(migrate: Migrator, dynamodb: Any, pg: psycopg.Connection[TupleRow]) -> None:
    create_table(dynamodb, "t", [("Id", "S"), ("Sort", "N")])
    put_items(dynamodb, "t", _items(200))
    run = migrate("-lc", "-n", "1", "--workers", "4", "--segments", "8", "-t", "t")
    assert_ok(run)
    columns = [
        r[0]
        for r in pg.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = 't'"
            " ORDER BY ordinal_position",
            [migrate.target],
        )
    ]
    assert columns == ["id", "sort", "name"]
    # -n 1 caps the four workers to one connection.
    assert "with 1 worker(s)" in run.err, run
    assert _count(pg, migrate.target, "t") == 200


@pytest.mark.usefixtures("citus_stand_in")
def test_citus_distributes_before_any_row(migrate: Migrator, dynamodb: Any, pg: psycopg.Connection[TupleRow]) -> None:
    create_table(dynamodb, "orders", [("Id", "S"), ("Sort", "N")])
    create_table(dynamodb, "users", [("Id", "S")])
    put_items(dynamodb, "orders", _items(300))
    put_items(dynamodb, "users", [{"Id": {"S": f"u{i}"}, "Name": {"S": "x"}} for i in range(20)])
    assert_ok(migrate("-x", "--workers", "2", "--segments", "4"))
    calls = pg.execute("SELECT rel, col, nrows FROM public.citus_calls ORDER BY at").fetchall()
    target = migrate.target
    assert sorted(calls) == sorted([(f"{target}.orders", "Id", 0), (f"{target}.users", "Id", 0)]), calls
    # Every COPY into the distributed tables ran with one connection per worker node.
    copies = pg.execute("SELECT rel, pool_size FROM public.citus_copies").fetchall()
    assert copies and {p for _, p in copies} == {"1"}, copies
    assert {r for r, _ in copies} == {f"{target}.orders", f"{target}.users"}
    # The state tables stay local: only the target tables were distributed.
    assert not any(migrate.state in rel for rel, _, _ in calls)
    # A rerun does not distribute again.
    assert_ok(migrate("-x"))
    assert pg.execute("SELECT count(*) FROM public.citus_calls").fetchone() == (2,)
    check_loaded(pg, migrate.state, "orders", source_items(dynamodb, "orders"))


@pytest.mark.usefixtures("citus_stand_in")
def test_citus_dry_run_distributes_after_create(migrate: Migrator, dynamodb: Any) -> None:
    create_table(dynamodb, "orders", [("Id", "S")])
    put_items(dynamodb, "orders", [{"Id": {"S": "a"}}])
    printed = migrate("-x", "-t", "orders", no_url=True)
    assert_ok(printed)
    out = printed.stdout
    create, distribute, copy = out.index("CREATE TABLE"), out.index("create_distributed_table"), out.index("COPY")
    assert create < distribute < copy, out
    assert f"""create_distributed_table('"{migrate.target}"."orders"'::regclass, 'Id')""" in out


@pytest.mark.usefixtures("citus_stand_in")
def test_citus_follow_applies_with_one_connection_per_node(
    migrate: Migrator, dynamodb: Any, pg: psycopg.Connection[TupleRow]
) -> None:
    create_table(dynamodb, "orders", [("Id", "S"), ("Sort", "N")])
    dynamodb.update_table(
        TableName="orders", StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    )
    put_items(dynamodb, "orders", _items(20))
    assert_ok(migrate("-x"))
    loaded = pg.execute("SELECT count(*) FROM public.citus_copies").fetchone()
    dynamodb.delete_item(TableName="orders", Key={"Id": {"S": "k3"}, "Sort": {"N": "3"}})
    put_items(dynamodb, "orders", [{"Id": {"S": "new"}, "Sort": {"N": "1"}, "Name": {"S": "n"}}])
    follow = [
        PODYN, "follow", "--postgres-url", migrate.dsn, "--endpoint-url", migrate.endpoint, "--region", REGION,
        "--state-schema", migrate.state, "--exit-when-idle", "1",
    ]  # fmt: skip
    done = subprocess.run(follow, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    # The stand-in's probe saw the follower's upserts too, each with one connection per node.
    after = pg.execute("SELECT count(*), array_agg(DISTINCT pool_size) FROM public.citus_copies").fetchone()
    assert loaded is not None and after is not None
    assert after[0] > loaded[0] and after[1] == ["1"], after
    rows = pg.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(migrate.target, "orders"))).fetchone()
    assert rows == (20,)


@pytest.mark.usefixtures("citus_stand_in")
def test_citus_on_a_table_made_undistributed_is_refused(migrate: Migrator, dynamodb: Any) -> None:
    # Before: `-x` after a `-s` without it left the table local, silently.
    create_table(dynamodb, "orders", [("Id", "S")])
    put_items(dynamodb, "orders", [{"Id": {"S": "a"}}])
    assert_ok(migrate("-s", "-t", "orders"))
    run = migrate("-x", "-t", "orders")
    assert_refused(run, "exists and is not distributed", "create_distributed_table(")
