"""migrate options over the fast Scan server: the overflow column, a deferred primary key, pacing."""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

import orjson
import psycopg
import pytest
from psycopg import sql

from podyn_fast import state
from podyn_fast.dynamo.client import RawDynamo
from tests import reference
from tests.fix_scan_server import ALL_TYPES, ALL_TYPES_COUNT, TYPICAL, TYPICAL_COUNT, migrate_cmd
from tests.moto_migrate import PODYN
from tests.servers.scan import TYPICAL_KEYS, ScanServer, TableSpec, all_types_item, typical_item


def _migrate(dsn: str, endpoint: str, schemas: tuple[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        migrate_cmd(dsn, endpoint, schemas, *args), capture_output=True, text=True, timeout=300, check=False
    )


def _check(conn: psycopg.Connection[Any], schemas: tuple[str, str], table: str, items: list[Any]) -> None:
    found = state.get_table(conn, schemas[1], table)
    assert found is not None
    reference.check_table(conn, schemas[0], table, state.layout(conn, schemas[1], found), items)


def test_attributes_past_the_column_limit_go_to_the_overflow_column(
    pg_dsn: str, fast_dynamo: ScanServer, schemas: tuple[str, str]
) -> None:
    done = _migrate(pg_dsn, fast_dynamo.endpoint, schemas, "--table", ALL_TYPES, "--column-limit", "12")
    assert done.returncode == 0, done.stderr
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        found = state.get_table(conn, schemas[1], ALL_TYPES)
        assert found is not None and found.document_column == "_overflow"
        layout = state.layout(conn, schemas[1], found)
        assert len(layout.columns) <= 12 and layout.column_names[-1] == "_overflow"
        overflowing = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.{} WHERE _overflow IS NOT NULL").format(
                sql.Identifier(schemas[0]), sql.Identifier(ALL_TYPES)
            )
        ).fetchone()
        assert overflowing is not None and overflowing[0] > ALL_TYPES_COUNT // 2
        # Every attribute is somewhere: in its column, or under its name in the overflow document.
        _check(conn, schemas, ALL_TYPES, [orjson.loads(all_types_item(i)) for i in range(ALL_TYPES_COUNT)])


def test_deferred_primary_key_is_added_after_the_load(
    pg_dsn: str, fast_dynamo: ScanServer, schemas: tuple[str, str]
) -> None:
    done = _migrate(pg_dsn, fast_dynamo.endpoint, schemas, "--table", TYPICAL, "--defer-primary-key")
    assert done.returncode == 0, done.stderr
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        pk = conn.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'p'",
            [sql.Identifier(schemas[0], TYPICAL).as_string(conn)],
        ).fetchall()
        assert pk == [("PRIMARY KEY (pk, sk)",)]
        _check(conn, schemas, TYPICAL, [orjson.loads(typical_item(i)) for i in range(TYPICAL_COUNT)])


@pytest.mark.parametrize(
    ("described", "args", "after"),
    [
        (10 << 30, [], True),  # larger than shared_buffers (128 MB here): built after the load
        (1 << 20, [], False),  # smaller: in place during it
        (10 << 30, ["--no-defer-primary-key"], False),
        (1 << 20, ["--defer-primary-key"], True),
        (10 << 30, ["-s"], False),  # created for someone else to fill: with its key
    ],
)
def test_the_primary_key_is_built_after_the_load_of_a_table_larger_than_shared_buffers(
    pg_dsn: str, fast_dynamo: ScanServer, schemas: tuple[str, str], described: int, args: list[str], after: bool
) -> None:
    fast_dynamo.add_table(TableSpec("sized", TYPICAL_KEYS, typical_item, 3000, described_size=described))
    done = _migrate(pg_dsn, fast_dynamo.endpoint, schemas, "--table", "sized", *args)
    assert done.returncode == 0, done.stderr
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        table = state.get_table(conn, schemas[1], "sized")
        assert table is not None and table.deferred_primary_key == after
        pk = conn.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'p'",
            [sql.Identifier(schemas[0], "sized").as_string(conn)],
        ).fetchall()
        assert pk == [("PRIMARY KEY (pk, sk)",)]
        if "-s" not in args:
            _check(conn, schemas, "sized", [orjson.loads(typical_item(i)) for i in range(3000)])


def test_scan_rate_paces_the_reads(pg_dsn: str, fast_dynamo: ScanServer, schemas: tuple[str, str]) -> None:
    # The typical table is ~9 MB: ~1,100 read units at eventual consistency. At 500 units/s shared by
    # two workers the load cannot take less than about two seconds of reading.
    started = time.monotonic()
    done = _migrate(pg_dsn, fast_dynamo.endpoint, schemas, "--table", TYPICAL, "--scan-rate", "500", "--workers", "2")
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        row = conn.execute(
            sql.SQL("SELECT sum(capacity) FROM {}.segments").format(sql.Identifier(schemas[1]))
        ).fetchone()
    assert row is not None
    capacity = float(row[0])
    assert capacity > 500
    # Each worker reads at 250 units/s and waits before its next request for what its last page
    # cost, so only each worker's first page (≈ 130 units) is free: the rest goes at 500 units/s.
    assert elapsed >= (capacity - 2 * 130) / 500, (elapsed, capacity)


def _page_two_keys(server: ScanServer) -> set[tuple[str, str]]:
    """Keys from the middle of the second Scan page of ``fresh0`` (one segment), away from its edges."""
    dynamo = RawDynamo(region="us-east-1", endpoint_url=server.endpoint)
    first = orjson.loads(dynamo.scan_page("fresh0", segment=0, total_segments=1))
    second = orjson.loads(
        dynamo.scan_page(
            "fresh0", segment=0, total_segments=1, exclusive_start_key=orjson.dumps(first["LastEvaluatedKey"])
        )
    )
    return {(i["pk"]["S"], i["sk"]["N"]) for i in second["Items"][200:-200]}


def test_a_new_attribute_on_a_transactions_first_page_never_moves_the_position_back(
    pg_dsn: str, fast_dynamo: ScanServer, schemas: tuple[str, str]
) -> None:
    # One segment, one page per transaction, and an attribute that first appears on the second
    # page: that transaction commits its lease renewal before any row, and the checkpoint must keep
    # the position the first page committed (once, it wrote the lease's starting one back).
    fast_dynamo.add_table(TableSpec("fresh0", TYPICAL_KEYS, typical_item, 6000))
    keys = _page_two_keys(fast_dynamo)

    def fresh(i: int) -> bytes:
        item = orjson.loads(typical_item(i))
        if (item["pk"]["S"], item["sk"]["N"]) in keys:
            item["fresh"] = {"S": f"new {i}"}
        return orjson.dumps(item)

    fast_dynamo.add_table(TableSpec("fresh", TYPICAL_KEYS, fresh, 6000))
    args = ("--table", "fresh", "--segments", "1", "--workers", "1", "--batch-mb", "1")
    created = _migrate(pg_dsn, fast_dynamo.endpoint, schemas, *args, "-s")
    assert created.returncode == 0, created.stderr
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE TABLE {log} (old_key bytea, new_key bytea, done boolean);"
                " CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$"
                " BEGIN INSERT INTO {log} VALUES (OLD.last_key, NEW.last_key, NEW.done); RETURN NEW; END $$;"
                " CREATE TRIGGER positions BEFORE UPDATE OF last_key ON {seg} FOR EACH ROW EXECUTE FUNCTION {fn}()"
            ).format(
                log=sql.Identifier(schemas[1], "positions"),
                fn=sql.Identifier(schemas[1], "log_position"),
                seg=sql.Identifier(schemas[1], "segments"),
            )
        )
    done = _migrate(pg_dsn, fast_dynamo.endpoint, schemas, *args, "-d")
    assert done.returncode == 0, done.stderr
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        moves = conn.execute(
            sql.SQL("SELECT old_key, new_key, done FROM {}").format(sql.Identifier(schemas[1], "positions"))
        ).fetchall()
        # A checkpoint that kept its position: the transaction that met the new attribute first.
        assert any(a is not None and a == b for a, b, _ in moves), moves
        # Once a position is committed, no checkpoint but the last (done) goes back to the start.
        assert not [m for m in moves if m[0] is not None and m[1] is None and not m[2]], moves
        _check(conn, schemas, "fresh", [orjson.loads(fresh(i)) for i in range(6000)])


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [
        ("migrate", "--segments", "-1"),
        ("migrate", "--segments", "0"),
        ("migrate", "--segments", "1000001"),
        ("migrate", "--workers", "0"),
        ("migrate", "--workers", "-3"),
        ("migrate", "-n", "0"),
        ("migrate", "--batch-mb", "0"),
        ("migrate", "--batch-mb", "-1"),
        ("migrate", "--batch-mb", "nan"),
        ("migrate", "--scan-rate", "0"),
        ("migrate", "--column-limit", "1601"),
        ("migrate", "--column-limit", "0"),
        ("migrate", "--progress-every", "0"),
        ("migrate", "--exit-when-idle", "-1"),
        ("follow", "--exit-when-idle", "-1"),
        ("follow", "--column-limit", "5000"),
        ("verify", "--threads", "0"),
        ("verify", "--sample", "0"),
        ("verify", "--scan-rate", "-5"),
    ],
)
def test_a_numeric_option_out_of_range_is_refused_before_anything_is_written(
    pg_dsn: str, fast_dynamo: ScanServer, schemas: tuple[str, str], command: str, option: str, value: str
) -> None:
    # Before: `--segments -1` loaded 0 of the table's items, called it loaded and exited 0.
    cmd = [PODYN, command, "--postgres-url", pg_dsn, "--endpoint-url", fast_dynamo.endpoint]
    cmd += ["--region", "us-east-1", "--state-schema", schemas[1], f"{option}={value}"]
    if command == "migrate":
        cmd += ["--target-schema", schemas[0], "--table", TYPICAL]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert "Invalid value for" in done.stderr and option in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert fast_dynamo.stats(TYPICAL).requests == 0  # DynamoDB not asked
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for schema in schemas:
            assert conn.execute("SELECT to_regnamespace(%s)", [schema]).fetchone() == (None,)


@pytest.mark.parametrize("command", ["migrate", "follow", "verify"])
@pytest.mark.parametrize("value", ["0", "-1", "x", "51"])
def test_a_bad_aws_max_attempts_is_refused_before_anything_is_written(
    pg_dsn: str, fast_dynamo: ScanServer, schemas: tuple[str, str], command: str, value: str
) -> None:
    cmd = [PODYN, command, "--postgres-url", pg_dsn, "--endpoint-url", fast_dynamo.endpoint]
    cmd += ["--region", "us-east-1", "--state-schema", schemas[1]]
    if command == "migrate":
        cmd += ["--target-schema", schemas[0], "--table", TYPICAL]
    env = {**os.environ, "AWS_MAX_ATTEMPTS": value}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False, env=env)
    assert done.returncode == 2, done.stderr
    assert "AWS_MAX_ATTEMPTS must be a whole number from 1 to 50" in " ".join(done.stderr.split()), done.stderr
    assert fast_dynamo.stats(TYPICAL).requests == 0
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for schema in schemas:
            assert conn.execute("SELECT to_regnamespace(%s)", [schema]).fetchone() == (None,)
