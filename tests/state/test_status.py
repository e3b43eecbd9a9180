"""`podyn-fast status [--json]` against real runs: a finished load, a load that failed half-way,
a followed table and a table whose stream lost changes."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import psycopg
from psycopg import sql

from podyn_fast import state
from tests.fix_pg import committed_items
from tests.fix_scan_server import TYPICAL, TYPICAL_COUNT, migrate_cmd
from tests.moto_migrate import PODYN, Migrator, assert_ok, create_table, put_items
from tests.servers.scan import TYPICAL_KEYS, ScanServer, TableSpec, typical_item


def status(dsn: str, state_schema: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [PODYN, "status", "--postgres-url", dsn, "--state-schema", state_schema, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def status_json(dsn: str, state_schema: str, *args: str) -> dict[str, dict[str, Any]]:
    done = status(dsn, state_schema, "--json", *args)
    assert done.returncode == 0, done.stderr
    return {t["table"]: t for t in json.loads(done.stdout)["tables"]}


def test_a_finished_load(pg_dsn: str, fast_dynamo: ScanServer, schemas: tuple[str, str]) -> None:
    cmd = migrate_cmd(pg_dsn, fast_dynamo.endpoint, schemas, "--table", TYPICAL, "--segments", "8")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    t = status_json(pg_dsn, schemas[1])[TYPICAL]
    assert t["phase"] == "loaded"
    assert (t["segments_done"], t["segments_total"]) == (8, 8)
    assert t["items"] == TYPICAL_COUNT
    assert t["rejects"] == 0 and t["last_error"] is None
    assert t["lag_seconds"] is None and t["shards_open"] == 0
    assert t["target"] == f"{schemas[0]}.{TYPICAL}"
    assert t["source"] is None  # a Scan
    # For a person: one row per table, the same figures.
    shown = status(pg_dsn, schemas[1])
    assert shown.returncode == 0, shown.stderr
    assert TYPICAL in shown.stdout and "loaded" in shown.stdout and f"{TYPICAL_COUNT:,}" in shown.stdout
    assert "8/8" in shown.stdout


def test_a_load_that_failed(pg_dsn: str, fast_dynamo: ScanServer, schemas: tuple[str, str]) -> None:
    fast_dynamo.add_table(TableSpec("vanishing", TYPICAL_KEYS, typical_item, 30_000))
    fast_dynamo.latency = 0.05
    cmd = migrate_cmd(pg_dsn, fast_dynamo.endpoint, schemas, "--table", "vanishing", "--segments", "4")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Once some rows are committed, the table disappears from DynamoDB under the load.
        deadline = time.monotonic() + 120
        while (
            time.monotonic() < deadline and proc.poll() is None and not committed_items(pg_dsn, schemas[1], "vanishing")
        ):
            time.sleep(0.05)
        fast_dynamo.remove_table("vanishing")
        _, stderr = proc.communicate(timeout=120)
    finally:
        fast_dynamo.latency = 0.0
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, stderr
    t = status_json(pg_dsn, schemas[1], "--table", "vanishing")["vanishing"]
    assert t["phase"] == "loading"
    assert 0 < t["items"] < 30_000 and t["segments_done"] < t["segments_total"] == 4
    assert "ResourceNotFoundException" in t["last_error"], t
    assert t["last_error_at"] is not None
    shown = status(pg_dsn, schemas[1])
    assert "vanishing: last error" in " ".join(shown.stdout.split()), shown.stdout


def test_no_state_schema(pg_dsn: str) -> None:
    done = status(pg_dsn, "no_such_state_schema")
    assert done.returncode == 1
    message = " ".join(done.stderr.split())
    assert "no podyn-fast state in schema 'no_such_state_schema'" in message and "run migrate first" in message
    assert "Traceback" not in done.stderr


def test_a_followed_table(migrate: Migrator, dynamodb: Any) -> None:
    create_table(dynamodb, "Orders", [("Id", "S")])
    dynamodb.update_table(
        TableName="Orders", StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    )
    put_items(dynamodb, "Orders", [{"Id": {"S": f"o{i}"}, "n": {"N": str(i)}} for i in range(30)])
    assert_ok(migrate("--follow", "--exit-when-idle", "1"))
    t = status_json(migrate.dsn, migrate.state)["Orders"]
    assert t["phase"] == "following"
    assert t["items"] == 30 and t["changes_applied"] == 30  # the puts, captured from the start
    # The follower exited a moment ago, caught up: its last record says so.
    assert t["lag_seconds"] == 0.0
    assert t["follower_seen_seconds_ago"] is not None and t["follower_seen_seconds_ago"] < 30
    assert t["shards_open"] >= 1


def test_an_older_state_schema_gains_the_new_columns(pg_dsn: str, schemas: tuple[str, str]) -> None:
    # A load started by an earlier version goes on after an upgrade: its state schema lacks the
    # columns added since, and the first run of the new version adds them.
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        state.ensure_schema(conn, schemas[1])
        tables = sql.Identifier(schemas[1], "tables")
        added = ("last_error", "last_error_at", "follow_lag", "follow_heartbeat", "load_started_at", "source")
        for column in added:
            conn.execute(sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(tables, sql.Identifier(column)))
        # A command that only reads the state (status, verify) comes first after the upgrade.
        assert status_json(pg_dsn, schemas[1]) == {}
        columns = {
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = 'tables'",
                [schemas[1]],
            )
        }
        assert set(added) <= columns
        assert state.get_table(conn, schemas[1], "none") is None  # reads every column
