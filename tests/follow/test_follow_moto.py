"""`podyn-fast follow` over moto's server: every change kind and attribute type arrives exactly.

moto keeps one shard that never splits or expires: lineage, splits, kills and gaps are tested
over our own Streams server (test_follow_streams.py).
"""

from __future__ import annotations

import random
import subprocess
import threading
import time
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from tests.fix_dynamo import REGION
from tests.moto_migrate import PODYN, Migrator, check_loaded, every_type, put_items, source_items

TABLE = "Orders"


def _stream_table(dynamodb: Any, view: str | None = "NEW_AND_OLD_IMAGES") -> None:
    """The test table, with a stream of ``view`` (None: no stream)."""
    stream = {"StreamSpecification": {"StreamEnabled": True, "StreamViewType": view}} if view else {}
    dynamodb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "N"},
        ],
        BillingMode="PAY_PER_REQUEST",
        **stream,
    )


def _follow(migrate: Migrator, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [PODYN, "follow", "--postgres-url", migrate.dsn, "--endpoint-url", migrate.endpoint, "--region", REGION]
    cmd += ["--state-schema", migrate.state, "--exit-when-idle", "1", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def _changes(dynamodb: Any, rng: random.Random) -> None:
    """INSERTs, MODIFYs that add and remove attributes, REMOVEs, and every attribute type."""
    put_items(dynamodb, TABLE, [{"pk": {"S": f"new{i}"}, "sk": {"N": str(i)}, **every_type(rng, i)} for i in range(30)])
    for i in range(10):  # modify: replace with other attributes (some added, some gone)
        put_items(dynamodb, TABLE, [{"pk": {"S": f"p{i}"}, "sk": {"N": "1"}, "only": {"S": f"v{i}"}}])
    for i in range(10, 15):
        dynamodb.update_item(
            TableName=TABLE,
            Key={"pk": {"S": f"p{i}"}, "sk": {"N": "1"}},
            UpdateExpression="SET added = :a REMOVE s",
            ExpressionAttributeValues={":a": {"NS": ["1", "2.5"]}},
        )
    for i in range(15, 20):
        dynamodb.delete_item(TableName=TABLE, Key={"pk": {"S": f"p{i}"}, "sk": {"N": "1"}})
    # A key changed several times: only its final state must remain.
    for v in range(5):
        put_items(dynamodb, TABLE, [{"pk": {"S": "busy"}, "sk": {"N": "0"}, "v": {"N": str(v)}}])


def _initial(dynamodb: Any, rng: random.Random) -> None:
    put_items(dynamodb, TABLE, [{"pk": {"S": f"p{i}"}, "sk": {"N": "1"}, **every_type(rng, i)} for i in range(25)])


def test_changes_after_migrate_arrive_exactly(
    migrate: Migrator, dynamodb: Any, pg: psycopg.Connection[TupleRow]
) -> None:
    rng = random.Random(4)
    _stream_table(dynamodb)
    _initial(dynamodb, rng)
    run = migrate("--table", TABLE)
    assert run.returncode == 0, str(run)
    _changes(dynamodb, rng)
    done = _follow(migrate)
    assert done.returncode == 0, done.stderr
    check_loaded(pg, migrate.state, TABLE, source_items(dynamodb, TABLE))
    # A second run applies nothing twice: its checkpoints are where the first left them.
    again = _follow(migrate)
    assert again.returncode == 0, again.stderr
    check_loaded(pg, migrate.state, TABLE, source_items(dynamodb, TABLE))
    applied = pg.execute(sql.SQL("SELECT sum(records) FROM {}.shards").format(sql.Identifier(migrate.state))).fetchone()
    assert applied is not None and applied[0] > 60


def test_keys_only_stream_fetches_items(migrate: Migrator, dynamodb: Any, pg: psycopg.Connection[TupleRow]) -> None:
    rng = random.Random(5)
    _stream_table(dynamodb, "KEYS_ONLY")
    _initial(dynamodb, rng)
    assert migrate("--table", TABLE).returncode == 0
    _changes(dynamodb, rng)
    done = _follow(migrate)
    assert done.returncode == 0, done.stderr
    check_loaded(pg, migrate.state, TABLE, source_items(dynamodb, TABLE))


def test_migrate_follow_with_writes_during_the_load(
    migrate: Migrator, dynamodb: Any, pg: psycopg.Connection[TupleRow]
) -> None:
    rng = random.Random(6)
    _stream_table(dynamodb)
    _initial(dynamodb, rng)
    put_items(dynamodb, TABLE, [{"pk": {"S": f"bulk{i}"}, "sk": {"N": str(i)}, "v": {"S": "x"}} for i in range(300)])
    stop = threading.Event()

    def writer() -> None:
        # Writes throughout the load (300 items take moto a second or two to serve), then stop so
        # the follower can go idle and exit.
        i = 0
        while not stop.is_set() and i < 300:
            put_items(dynamodb, TABLE, [{"pk": {"S": f"bulk{i % 300}"}, "sk": {"N": str(i % 300)}, "v": {"N": str(i)}}])
            if i % 3 == 0:
                dynamodb.delete_item(TableName=TABLE, Key={"pk": {"S": f"p{i % 25}"}, "sk": {"N": "1"}})
            i += 1
            time.sleep(0.01)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.3)
        run = migrate("--table", TABLE, "--follow", "--exit-when-idle", "3", "--workers", "2")
    finally:
        stop.set()
        thread.join()
    assert run.returncode == 0, str(run)
    # Writes may have continued after the follower went idle: catch up, then compare.
    done = _follow(migrate)
    assert done.returncode == 0, done.stderr
    check_loaded(pg, migrate.state, TABLE, source_items(dynamodb, TABLE))
    phase = pg.execute(sql.SQL("SELECT phase FROM {}.tables").format(sql.Identifier(migrate.state))).fetchone()
    assert phase == ("following",)
    spooled = pg.execute(sql.SQL("SELECT count(*) FROM {}.changes").format(sql.Identifier(migrate.state))).fetchone()
    assert spooled == (0,)


def test_table_without_stream_is_refused(migrate: Migrator, dynamodb: Any) -> None:
    rng = random.Random(7)
    _stream_table(dynamodb, None)
    _initial(dynamodb, rng)
    assert migrate("--table", TABLE).returncode == 0
    done = _follow(migrate)
    assert done.returncode == 1
    assert "has no stream" in done.stderr and "Traceback" not in done.stderr


def test_follow_before_migrate_is_refused(migrate: Migrator, dynamodb: Any) -> None:
    _stream_table(dynamodb)
    done = _follow(migrate, "--table", TABLE)
    assert done.returncode == 1
    assert "migrate" in done.stderr and "Traceback" not in done.stderr
