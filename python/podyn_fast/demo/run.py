"""`podyn-fast demo`: the whole job on a laptop, with nothing to configure and no AWS account.

It starts a local DynamoDB emulator holding the DynamoDB Developer Guide's sample tables (streams
on) and an embedded PostgreSQL, runs the real `podyn-fast migrate --follow` against them as a
separate process, makes a few writes and deletes and shows each one arriving in PostgreSQL, checks
that the two sides hold the same rows, and prints how to look with psql.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.session
import orjson
import psycopg
from psycopg import sql
from rich.console import Console
from rich.table import Table

from podyn_fast.demo.emulator import LocalDynamo
from podyn_fast.embedded.postgres import EmbeddedPostgres, find_bindir
from podyn_fast.errors import DemoError

REGION = "us-east-1"
# The emulator checks no signature; these credentials cannot sign anything real AWS accepts.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo"}
# How long a change may take to reach PostgreSQL before the demo calls it a failure.
ARRIVAL_TIMEOUT = 60.0
LOAD_TIMEOUT = 180.0


def sample_tables() -> list[dict[str, Any]]:
    """The Developer Guide's sample tables: CreateTable parameters and items in DynamoDB JSON."""
    text = importlib.resources.files("podyn_fast.demo").joinpath("sample_tables.json").read_bytes()
    tables: list[dict[str, Any]] = orjson.loads(text)["tables"]
    return tables


def create_sample_tables(client: Any) -> dict[str, int]:
    """Create the sample tables with NEW_AND_OLD_IMAGES streams and put their items; returns the
    item count of each."""
    counts = {}
    for table in sample_tables():
        params = {
            **table["create"],
            "BillingMode": "PAY_PER_REQUEST",
            "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        }
        client.create_table(**params)
        name = params["TableName"]
        for item in table["items"]:
            client.put_item(TableName=name, Item=item)
        counts[name] = len(table["items"])
    return counts


@dataclass
class Change:
    """A write made to DynamoDB, and the query that returns a row once it is visible in PostgreSQL."""

    kind: str
    what: str
    write: Callable[[Any], object]
    visible: sql.Composed
    params: tuple[Any, ...]


def changes() -> list[Change]:
    def q(text: str, *names: str) -> sql.Composed:
        return sql.SQL(text).format(*(sql.Identifier(n) for n in names))

    reply_key = ("Amazon S3#S3 Thread 1", time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()))
    return [
        Change(
            "INSERT",
            "a reply is posted to 'S3 Thread 1'",
            lambda c: c.put_item(
                TableName="Reply",
                Item={
                    "Id": {"S": reply_key[0]},
                    "ReplyDateTime": {"S": reply_key[1]},
                    "Message": {"S": "Hello from the podyn-fast demo"},
                    "PostedBy": {"S": "User C"},
                },
            ),
            q("SELECT 1 FROM {} WHERE {} = %s AND {} = %s", "Reply", "Id", "ReplyDateTime"),
            reply_key,
        ),
        Change(
            "MODIFY",
            "the price of product 101 goes from 2 to 25",
            lambda c: c.update_item(
                TableName="ProductCatalog",
                Key={"Id": {"N": "101"}},
                UpdateExpression="SET Price = :p",
                ExpressionAttributeValues={":p": {"N": "25"}},
            ),
            q("SELECT 1 FROM {} WHERE {} = 101 AND {} = 25", "ProductCatalog", "Id", "Price"),
            (),
        ),
        Change(
            "REMOVE",
            "'DynamoDB Thread 2' is deleted",
            lambda c: c.delete_item(
                TableName="Thread",
                Key={"ForumName": {"S": "Amazon DynamoDB"}, "Subject": {"S": "DynamoDB Thread 2"}},
            ),
            q(
                "SELECT 1 WHERE NOT EXISTS (SELECT FROM {} WHERE {} = %s AND {} = %s)",
                "Thread",
                "ForumName",
                "Subject",
            ),
            ("Amazon DynamoDB", "DynamoDB Thread 2"),
        ),
        Change(
            "INSERT",
            "a forum with an attribute no item had (Moderators: a new column)",
            lambda c: c.put_item(
                TableName="Forum",
                Item={
                    "Name": {"S": "Amazon Aurora"},
                    "Category": {"S": "Amazon Web Services"},
                    "Threads": {"N": "0"},
                    "Moderators": {"SS": ["User A", "User C"]},
                },
            ),
            q("SELECT 1 FROM {} WHERE {} = %s AND {} IS NOT NULL", "Forum", "Name", "Moderators"),
            ("Amazon Aurora",),
        ),
    ]


def _wait_visible(conn: psycopg.Connection[Any], change: Change, migrate: subprocess.Popen[bytes]) -> float:
    started = time.monotonic()
    while time.monotonic() - started < ARRIVAL_TIMEOUT:
        if migrate.poll() is not None:
            raise DemoError(f"podyn-fast migrate --follow exited ({migrate.returncode}) before the change arrived")
        try:
            if conn.execute(change.visible, change.params).fetchone() is not None:
                return time.monotonic() - started
        except psycopg.errors.UndefinedColumn:
            pass  # the new attribute's column is not there yet
        time.sleep(0.05)
    raise DemoError(f"{change.what}: not in PostgreSQL after {ARRIVAL_TIMEOUT:g} s")


def _wait_loaded(conn: psycopg.Connection[Any], names: list[str], migrate: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + LOAD_TIMEOUT
    while time.monotonic() < deadline:
        if migrate.poll() is not None:
            raise DemoError(f"podyn-fast migrate --follow exited ({migrate.returncode}) during the load")
        with contextlib.suppress(psycopg.errors.UndefinedTable):
            row = conn.execute(
                "SELECT count(*) FROM podyn.tables WHERE table_name = ANY(%s) AND phase <> 'loading'", [names]
            ).fetchone()
            if row is not None and row[0] == len(names):
                return
        time.sleep(0.1)
    raise DemoError(f"the sample tables were not loaded within {LOAD_TIMEOUT:g} s")


def _compare(conn: psycopg.Connection[Any], client: Any, names: list[str]) -> Table:
    """Row counts on both sides; raises when they differ."""
    table = Table(title="DynamoDB and PostgreSQL, after the changes")
    for col in ("table", "items in DynamoDB", "rows in PostgreSQL"):
        table.add_column(col)
    for name in names:
        source = client.scan(TableName=name, Select="COUNT")["Count"]
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("public", name))).fetchone()
        target = int(row[0]) if row else -1
        table.add_row(name, str(source), str(target))
        if source != target:
            raise DemoError(f"{name}: {source} items in DynamoDB but {target} rows in PostgreSQL")
    return table


@contextlib.contextmanager
def _migrate_follow(dsn: str, endpoint: str) -> Iterator[subprocess.Popen[bytes]]:
    """The real command, as a user would run it; stopped by SIGTERM (it finishes its batch)."""
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_PROFILE", "AWS_SESSION_TOKEN")}
    env.update(CREDENTIALS, AWS_DEFAULT_REGION=REGION, AWS_EC2_METADATA_DISABLED="true")
    cmd = [sys.executable, "-m", "podyn_fast", "migrate", "--postgres-url", dsn, "--endpoint-url", endpoint]
    cmd += ["--region", REGION, "--follow"]
    # A session of its own: Ctrl-C reaches the demo, which stops the follower before the emulator.
    process = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def run(console: Console, *, wait: bool) -> None:
    """The demo, start to end. Raises DemoError (or the emulator's or PostgreSQL's error)."""
    with tempfile.TemporaryDirectory(prefix="podyn-fast-demo-") as tmp:
        dynamo = LocalDynamo(Path(tmp) / "dynamodb-emulator.log")
        postgres = EmbeddedPostgres()
        try:
            _show(console, dynamo, postgres, wait=wait)
        finally:
            dynamo.stop()
            postgres.stop()


def _show(console: Console, dynamo: LocalDynamo, postgres: EmbeddedPostgres, *, wait: bool) -> None:
    say = console.print
    say("[bold]1. A local DynamoDB[/] (moto's server) with the Developer Guide's sample tables, streams on")
    endpoint = dynamo.start()
    client = botocore.session.Session().create_client(
        "dynamodb",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    counts = create_sample_tables(client)
    names = list(counts)
    say("   " + ", ".join(f"{n} ({c} items)" for n, c in counts.items()) + f" at {endpoint}")
    say("[bold]2. An embedded PostgreSQL[/]")
    dsn = postgres.start()
    say(f"   {dsn}")
    say("[bold]3. podyn-fast migrate --follow[/]: create the tables, load them, then apply the stream")
    with _migrate_follow(dsn, endpoint) as migrate, psycopg.connect(dsn, autocommit=True) as conn:
        _wait_loaded(conn, names, migrate)
        say("[bold]4. Changes in DynamoDB, arriving in PostgreSQL[/]")
        for change in changes():
            change.write(client)
            seconds = _wait_visible(conn, change, migrate)
            say(f"   {change.kind:<6}  {change.what}: in PostgreSQL after {seconds:.1f} s", soft_wrap=True)
        say(_compare(conn, client, names))
        _hints(console, dsn, endpoint if wait else None)
        if wait:
            _until_interrupted(migrate)


def _hints(console: Console, dsn: str, endpoint: str | None) -> None:
    psql = find_bindir() / "psql"
    command = f"{psql if psql.exists() else 'psql'} '{dsn}'"
    console.print("[bold]5. Look for yourself[/]" + (" (while the demo runs)" if endpoint else ""))
    console.print(f"   {command}", soft_wrap=True, highlight=False)
    for query in (
        'SELECT "Id", "Title", "Price", "Color" FROM "ProductCatalog" ORDER BY "Id";',
        'SELECT "Title", "ProductReviews" -> \'FiveStar\' FROM "ProductCatalog" WHERE "ProductReviews" IS NOT NULL;',
        'SELECT "Id", "ReplyDateTime", "PostedBy" FROM "Reply" ORDER BY 1, 2;',
        "SELECT table_name, phase FROM podyn.tables;",
    ):
        console.print(f"   {query}", soft_wrap=True, highlight=False, markup=False)
    if endpoint:
        console.print(
            "   Writes to the emulator keep arriving, e.g.\n"
            f"   AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo aws dynamodb put-item --endpoint-url {endpoint} "
            f'--region {REGION} --table-name Forum --item \'{{"Name": {{"S": "Mine"}}}}\'',
            soft_wrap=True,
            highlight=False,
            markup=False,
        )


def _until_interrupted(migrate: subprocess.Popen[bytes]) -> None:
    """Keep everything running until Ctrl-C or SIGTERM (or the follower ends on its own)."""
    print("Ctrl-C stops the demo (and removes its database).", file=sys.stderr)
    stop = False

    def handler(*_: object) -> None:
        nonlocal stop
        stop = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
    while not stop and migrate.poll() is None:
        time.sleep(0.2)
    if migrate.poll() is not None and not stop:
        raise DemoError(f"podyn-fast migrate --follow exited ({migrate.returncode})")
