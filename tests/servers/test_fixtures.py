"""Tests of the test fixtures themselves: embedded PostgreSQL, per-test schemas, moto over HTTP."""

from __future__ import annotations

import os
import random
import signal
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import TupleRow

from podyn_fast.embedded.postgres import EmbeddedPostgres
from tests.fix_pg import own_schema
from tests.servers import protocol


def test_pg_answers(pg: psycopg.Connection[TupleRow], pg_schema: str) -> None:
    row = pg.execute("SELECT version(), current_schema()").fetchone()
    assert row is not None
    assert str(row[0]).startswith("PostgreSQL ")
    assert row[1] == pg_schema


def test_each_test_has_a_schema_of_its_own_that_goes_with_it(pg_dsn: str) -> None:
    # What pg_schema gives every test, twice in a row in one test (it used to take two tests that
    # had to run in order).
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        with own_schema(pg_dsn, "first") as first:
            conn.execute(sql.SQL("CREATE TABLE {} (id int)").format(sql.Identifier(first, "marker")))
        with own_schema(pg_dsn, "second") as second:
            assert second != first
            found = conn.execute("SELECT to_regclass(%s)", [f"{second}.marker"]).fetchone()
            assert found == (None,)
            gone = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", [first]).fetchone()
            assert gone == (0,)
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", [second]).fetchone() == (0,)


def test_pg_schema_dsn(pg: psycopg.Connection[TupleRow], pg_schema_dsn: str) -> None:
    # Code under test that opens its own connection lands in the test's schema too.
    with psycopg.connect(pg_schema_dsn, autocommit=True) as other:
        other.execute("CREATE TABLE made_elsewhere (id int)")
    assert pg.execute("SELECT count(*) FROM made_elsewhere").fetchone() == (0,)


def test_moto_roundtrip(dynamodb: Any, moto_endpoint: str) -> None:
    assert dynamodb.meta.endpoint_url == moto_endpoint
    dynamodb.create_table(
        TableName="items",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.put_item(TableName="items", Item={"pk": {"S": "a"}, "n": {"N": "1.5"}})
    page = dynamodb.scan(TableName="items")
    assert page["Items"] == [{"pk": {"S": "a"}, "n": {"N": "1.5"}}]


def test_moto_is_reset_between_tests(dynamodb: Any) -> None:
    # Runs after test_moto_roundtrip, whose table must not survive it.
    assert dynamodb.list_tables()["TableNames"] == []


def test_fake_aws_credentials() -> None:
    assert os.environ["AWS_ACCESS_KEY_ID"] == "testing"
    assert "AWS_PROFILE" not in os.environ


def test_embedded_servers_are_independent_and_stop() -> None:
    with EmbeddedPostgres() as first, EmbeddedPostgres() as second:
        first_dsn = first.dsn
        assert first.start() == first_dsn  # a second start() is a no-op
        assert first_dsn != second.dsn
        with psycopg.connect(first_dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE only_in_first (id int)")
        with psycopg.connect(second.dsn) as conn:
            assert conn.execute("SELECT to_regclass('only_in_first')").fetchone() == (None,)
        base_dir = first.data_dir.parent
        first.stop()
        assert not base_dir.exists()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(first_dsn, connect_timeout=2)
        with psycopg.connect(second.dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


def test_embedded_stop_after_server_was_killed() -> None:
    server = EmbeddedPostgres()
    dsn = server.start()
    pid = server.pid
    assert pid is not None
    base_dir = server.data_dir.parent
    os.kill(pid, signal.SIGKILL)
    server.stop()
    assert server.pid is None
    assert not base_dir.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=2)


def test_the_servers_leave_the_random_modules_state_alone() -> None:
    # A handler thread still answering a request of an earlier test drew its request id from the
    # global generator while the property test drew its examples, which hypothesis refuses.
    before = random.getstate()
    ids = {protocol._request_id() for _ in range(100)}
    assert random.getstate() == before
    assert len(ids) == 100 and all(len(i) == 52 and i.isalnum() and i.isupper() for i in ids)
