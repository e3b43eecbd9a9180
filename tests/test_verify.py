"""`podyn-fast verify` against real runs: equal after a migrate; a row changed, deleted and added
behind its back (in PostgreSQL), an item added and an attribute introduced in DynamoDB without a
follower, all caught, named and counted; --sample; a table in jsonb mode."""

from __future__ import annotations

import random
import subprocess
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from tests.fix_dynamo import REGION
from tests.moto_migrate import PODYN, Migrator, assert_ok, create_table, every_type, put_items


def verify(migrate: Migrator, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        PODYN, "verify", "--postgres-url", migrate.dsn, "--state-schema", migrate.state,
        "--endpoint-url", migrate.endpoint, "--region", REGION, *args,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def _items(n: int) -> list[dict[str, Any]]:
    rng = random.Random(5)
    return [every_type(rng, i) | {"pk": {"S": f"k{i:03d}"}, "sk": {"N": str(i % 7)}} for i in range(n)]


def test_equal_then_differences_behind_its_back(
    migrate: Migrator, dynamodb: Any, pg: psycopg.Connection[TupleRow]
) -> None:
    create_table(dynamodb, "orders", [("pk", "S"), ("sk", "N")])
    items = _items(120)
    put_items(dynamodb, "orders", items)
    assert_ok(migrate("--segments", "4"))

    same = verify(migrate)
    assert same.returncode == 0, same.stdout + same.stderr
    assert "orders: EQUAL: 120 source items compared, 120 target rows" in same.stdout, same.stdout

    target = sql.Identifier(migrate.target, "orders")
    pg.execute(sql.SQL("UPDATE {} SET s = 'changed' WHERE pk = 'k010'").format(target))
    pg.execute(sql.SQL("DELETE FROM {} WHERE pk = 'k020'").format(target))
    pg.execute(sql.SQL("INSERT INTO {} (pk, sk) VALUES ('intruder', 1)").format(target))
    put_items(dynamodb, "orders", [{"pk": {"S": "late"}, "sk": {"N": "2"}, "brand_new": {"S": "x"}}])

    caught = verify(migrate)
    assert caught.returncode == 1, caught.stdout + caught.stderr
    out = caught.stdout
    assert "Traceback" not in caught.stderr and not caught.stderr.strip(), caught.stderr
    assert "orders: DIFFERENT: 121 source items compared, 120 target rows" in out, out
    assert "missing 2, extra 1, differing 1" in out, out
    assert "missing: k020, 6" in out and "missing: late, 2" in out, out
    assert "extra: intruder, 1" in out, out
    assert "differing: k010, 3 (columns s)" in out, out
    # The new attribute has no column in the target (and its item is missing altogether).
    assert "source attributes with no column in the target: brand_new" in out, out
    assert "Traceback" not in caught.stderr


def test_sample(migrate: Migrator, dynamodb: Any, pg: psycopg.Connection[TupleRow]) -> None:
    create_table(dynamodb, "orders", [("pk", "S"), ("sk", "N")])
    put_items(dynamodb, "orders", _items(200))
    assert_ok(migrate("--segments", "2"))
    pg.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(migrate.target, "orders")))
    sampled = verify(migrate, "--sample", "10")
    assert sampled.returncode == 1
    # Whole pages are read: at least the sample, far from the table (moto pages hold ~1 MB).
    line = next(x for x in sampled.stdout.splitlines() if x.startswith("orders:"))
    assert "extra not checked (--sample)" in line, line
    compared = int(line.split(": ")[2].split(" source")[0].replace(",", ""))
    assert 10 <= compared <= 200
    assert f"missing {compared:,}" in line


def test_jsonb_mode_and_unknown_table(migrate: Migrator, dynamodb: Any, pg: psycopg.Connection[TupleRow]) -> None:
    create_table(dynamodb, "docs", [("pk", "S")])
    put_items(dynamodb, "docs", [{"pk": {"S": f"d{i}"}, "m": {"M": {"i": {"N": str(i)}}}} for i in range(30)])
    assert_ok(migrate("-m", "jsonb"))
    assert verify(migrate).returncode == 0
    pg.execute(
        sql.SQL("""UPDATE {} SET data = data || '{{"added": 1}}' WHERE pk = 'd3'""").format(
            sql.Identifier(migrate.target, "docs")
        )
    )
    changed = verify(migrate, "-t", "docs")
    assert changed.returncode == 1
    assert "differing: d3 (columns data)" in changed.stdout, changed.stdout
    unknown = verify(migrate, "-t", "never_migrated")
    assert unknown.returncode == 1
    assert "'never_migrated' was not migrated" in " ".join(unknown.stderr.split()), unknown.stderr


def test_rejected_items_make_the_tables_different(migrate: Migrator, dynamodb: Any) -> None:
    # Before: an item that could not be stored left verify saying EQUAL, exit 0.
    create_table(dynamodb, "nuls", [("pk", "S")])
    put_items(dynamodb, "nuls", [{"pk": {"S": f"k{i}"}, "v": {"S": "fine"}} for i in range(5)])
    put_items(dynamodb, "nuls", [{"pk": {"S": "bad"}, "v": {"S": "a\u0000b"}}])
    assert migrate().returncode == 1  # the reject is reported
    done = verify(migrate)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "nuls: DIFFERENT: 5 source items compared" in done.stdout and "rejected 1" in done.stdout, done.stdout


def test_no_state_says_so_in_one_line(migrate: Migrator) -> None:
    # Before: a raw SQL error (relation … does not exist).
    cmd = [
        PODYN, "verify", "--postgres-url", migrate.dsn, "--state-schema", "no_such_state",
        "--endpoint-url", migrate.endpoint, "--region", REGION,
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    message = " ".join(done.stderr.split())
    assert "no podyn-fast state in schema 'no_such_state'" in message and "run migrate first" in message, message
    assert "Traceback" not in done.stderr and "does not exist" not in message
