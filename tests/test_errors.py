"""Errors a person can act on: one line naming the problem and the fix, no traceback unless
--verbose, no secret anywhere; --log-format json; progress lines when not on a terminal."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from typing import Any

import botocore.exceptions
import psycopg
import pytest
from psycopg import sql
from psycopg.rows import TupleRow

from podyn_fast import explain
from tests.moto_migrate import Migrator, assert_ok, assert_refused, create_table, put_items

# Made-up secrets, shaped like real ones, that no output may show.
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzSECRETzz"  # noqa: S105
TOKEN = "FwoGZXIvYXdzEJr//////////wEaDSESSIONTOKENzz"  # noqa: S105


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_no_aws_credentials(migrate: Migrator, tmp_path: Any) -> None:
    nowhere = str(tmp_path / "none")
    env = {"AWS_CONFIG_FILE": nowhere, "AWS_SHARED_CREDENTIALS_FILE": nowhere, "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.pop(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if k in os.environ}
    try:
        run = migrate("-t", "x", env=env)
    finally:
        os.environ.update(saved)
    assert_refused(run, "no AWS credentials found", "AWS_ACCESS_KEY_ID", "--profile")


def test_invalid_region(migrate: Migrator) -> None:
    run = migrate("-t", "x", "--region", "not a region!")
    assert_refused(run, "--region")
    assert "not a region!" in run.text


def test_postgres_unreachable(migrate: Migrator) -> None:
    url = f"postgresql://postgres:{SECRET}@127.0.0.1:{_free_port()}/postgres"
    run = migrate("-t", "x", url=url)
    assert_refused(run, "cannot connect to PostgreSQL", "check the host and port")
    assert SECRET not in run.stdout + run.stderr


def test_postgres_unknown_database(migrate: Migrator, pg_dsn: str) -> None:
    info = psycopg.conninfo.conninfo_to_dict(pg_dsn)
    info["dbname"] = "no_such_database_here"
    run = migrate("-t", "x", url=psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in info.items()}))
    assert_refused(run, "PostgreSQL has no database 'no_such_database_here'", "create it")


def test_a_database_not_in_utf8_is_refused_before_any_row(
    migrate: Migrator, dynamodb: Any, pg_dsn: str, pg: psycopg.Connection[TupleRow]
) -> None:
    # Before: the rows went in, converted by the server from what it took for the client's encoding.
    create_table(dynamodb, "accents", [("pk", "S")])
    put_items(dynamodb, "accents", [{"pk": {"S": "café ☕"}}])
    name = f"latin1_{os.getpid()}"
    pg.execute(
        sql.SQL("CREATE DATABASE {} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0").format(
            sql.Identifier(name)
        )
    )
    try:
        url = psycopg.conninfo.make_conninfo(pg_dsn, dbname=name)
        run = migrate("-t", "accents", url=url)
        assert_refused(run, f"database '{name}' is in encoding LATIN1, not UTF8", "ENCODING 'UTF8'")
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'm%%'").fetchone() == (0,)
    finally:
        pg.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))


@pytest.mark.parametrize(
    ("text", "sqlstate", "expected"),
    [
        ('password authentication failed for user "app"', "28P01", "PostgreSQL refused the password"),
        ("fe_sendauth: no password supplied", None, "PostgreSQL asks for a password"),
        ('role "ghost" does not exist', "28000", "PostgreSQL has no role 'ghost'"),
    ],
)
def test_postgres_refusals_read_well(text: str, sqlstate: str | None, expected: str) -> None:
    # The server here trusts every local connection: these refusals are built as libpq words them.
    error = psycopg.OperationalError(f"connection failed: {text}")
    error.sqlstate = sqlstate
    url = f"postgresql://app:{SECRET}@db.example.com/app"
    message = explain.message(error, url)
    assert message.startswith(expected), message
    assert "db.example.com" in message and SECRET not in message


def test_aws_refusals_read_well(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    expired = botocore.exceptions.ClientError(
        {"Error": {"Code": "ExpiredTokenException", "Message": f"token {TOKEN} expired"}}, "Scan"
    )
    message = explain.message(expired, None)
    assert message.startswith("AWS refused the credentials (ExpiredTokenException")
    assert TOKEN not in message and "********" in message
    denied = botocore.exceptions.ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "Scan")
    assert "AWS denied Scan" in explain.message(denied, None) and "IAM" in explain.message(denied, None)
    unreachable = botocore.exceptions.EndpointConnectionError(endpoint_url="https://dynamodb.nowhere-9.amazonaws.com/")
    assert "cannot reach DynamoDB at https://dynamodb.nowhere-9.amazonaws.com/" in explain.message(unreachable, None)


def test_incompatible_target_table(migrate: Migrator, dynamodb: Any, pg: psycopg.Connection[TupleRow]) -> None:
    create_table(dynamodb, "orders", [("id", "S")])
    put_items(dynamodb, "orders", [{"id": {"S": "a"}}])
    pg.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(migrate.target)))
    pg.execute(sql.SQL("CREATE TABLE {} (id integer PRIMARY KEY)").format(sql.Identifier(migrate.target, "orders")))
    run = migrate("-t", "orders")
    assert_refused(
        run, f"target table {migrate.target}.orders exists but does not fit", "'id' is integer", "--target-schema"
    )


def test_verbose_shows_the_traceback(migrate: Migrator) -> None:
    url = f"postgresql://postgres:{SECRET}@127.0.0.1:{_free_port()}/postgres"
    quiet = migrate("-t", "x", url=url)
    assert "Traceback" not in quiet.stderr
    loud = migrate("-t", "x", url=url, root_args=("--verbose",))
    assert loud.returncode == 1
    assert "Traceback" in loud.stderr and "cannot connect to PostgreSQL" in loud.text
    assert SECRET not in loud.stderr


def test_json_logs(migrate: Migrator, dynamodb: Any) -> None:
    create_table(dynamodb, "orders", [("id", "S")])
    put_items(dynamodb, "orders", [{"id": {"S": f"o{i}"}} for i in range(20)])
    run = migrate("-t", "orders", "--progress", root_args=("--log-format", "json"))
    assert_ok(run)
    records = [json.loads(line) for line in run.stderr.splitlines() if line.strip()]
    assert records, run
    summary = next(r for r in records if r["message"] == "migrate summary")
    assert summary["level"] == "info" and summary["tables"][0]["name"] == "orders"
    assert summary["tables"][0]["items"] == 20
    failed = migrate("-t", "nothing_here", root_args=("--log-format", "json"))
    assert failed.returncode == 1
    error = json.loads(failed.stderr.strip().splitlines()[-1])
    assert error["level"] == "error" and "nothing_here" in error["message"]


def test_progress_lines_when_not_on_a_terminal(migrate: Migrator, dynamodb: Any) -> None:
    create_table(dynamodb, "orders", [("id", "S")])
    put_items(dynamodb, "orders", [{"id": {"S": f"o{i}"}, "pad": {"S": "x" * 3000}} for i in range(2000)])
    run = migrate("-t", "orders", "--progress", "--progress-every", "0.1", "--segments", "8", "--workers", "1")
    assert_ok(run)
    lines = [x for x in run.stderr.splitlines() if x.startswith("orders: ") and " items" in x]
    assert lines, run
    assert all("MB/s" in x and " of 8 segments, " in x for x in lines), lines
    # No bar drawn into a pipe (the summary table below has rules, but no row of its draws one).
    assert not any("orders" in x and "━" in x for x in run.stderr.splitlines()), run


def test_the_region_comes_from_aws_region_as_the_aws_sdks_read_it(migrate: Migrator, dynamodb: Any) -> None:
    # Before: AWS_REGION was ignored (botocore reads AWS_DEFAULT_REGION only), and the error for a
    # missing region told the user to set AWS_REGION while it was set.
    create_table(dynamodb, "Orders", [("Id", "S")])
    put_items(dynamodb, "Orders", [{"Id": {"S": f"o{i}"}} for i in range(5)])
    argv = [a for a in migrate.command() if a not in ("--region", "us-east-1")]
    base = {k: v for k, v in os.environ.items() if k not in ("AWS_DEFAULT_REGION", "AWS_REGION")}
    for env, works in (({"AWS_REGION": "us-east-1"}, True), ({}, False)):
        done = subprocess.run(
            [*argv, "--table", "Orders"], capture_output=True, text=True, timeout=120, check=False, env=base | env
        )
        if works:
            assert done.returncode == 0, done.stderr
        else:
            said = " ".join(done.stderr.split())
            assert done.returncode == 1 and "no AWS region: pass --region, or set AWS_REGION" in said, said
            assert "Traceback" not in said
