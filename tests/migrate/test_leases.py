"""Segment leases that hold: migrates on hosts that share a hostname (each in a PID namespace of its
own), pages slower than the lease, and a holder frozen past its lease that must step aside.

Each runs the real command over the fast Scan server, with and without a deferred primary key
(then nothing in PostgreSQL refuses a row loaded twice: only the leases' fence does), and ends
with every row exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid

import orjson
import psycopg
import pytest
from psycopg import sql

from podyn_fast import state
from tests import reference
from tests.fix_pg import committed_items, segment_holders
from tests.fix_scan_server import migrate_cmd
from tests.proc import running
from tests.servers.scan import TYPICAL_KEYS, ScanServer, TableSpec, typical_item

TAKEN_OVER = "taking over"
STEPPED_ASIDE = "another worker has it now"
DEFER = [
    pytest.param(["--no-defer-primary-key"], id="primary-key"),
    pytest.param(["--defer-primary-key"], id="deferred-key"),
]


def _table(server: ScanServer, items: int) -> str:
    name = f"lease_{uuid.uuid4().hex[:6]}"
    server.add_table(TableSpec(name, TYPICAL_KEYS, typical_item, items))
    server.warm(name)
    return name


def _exact(dsn: str, schemas: tuple[str, str], table: str, items: int) -> None:
    """Every item once: no duplicate (a deferred key would not refuse one), no gap, exact rows."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        found = state.get_table(conn, schemas[1], table)
        assert found is not None and found.phase == "loaded", found
        keys = sql.SQL(", ").join(sql.Identifier(k) for k, _ in TYPICAL_KEYS)
        row = conn.execute(
            sql.SQL("SELECT count(*), count(DISTINCT ({})) FROM {}").format(keys, sql.Identifier(schemas[0], table))
        ).fetchone()
        assert row == (items, items), f"(rows, distinct keys) = {row} for {items} items"
        layout = state.layout(conn, schemas[1], found)
        reference.check_table(conn, schemas[0], table, layout, [orjson.loads(typical_item(i)) for i in range(items)])
        primary = conn.execute(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'p'",
            [sql.Identifier(schemas[0], table).as_string(conn)],
        ).fetchone()
        assert primary == (1,)


def _all_done(dsn: str, schema: str, table: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            p = state.progress(conn, schema, table)
        except psycopg.errors.UndefinedTable:
            return False
    return p.total_segments > 0 and p.segments_done == p.total_segments


def _said(text: str, what: str) -> bool:
    return what in " ".join(text.split())


@pytest.mark.parametrize("defer", DEFER)
def test_two_hosts_with_one_hostname_share_a_load(
    pg_dsn: str, fast_dynamo: ScanServer, schemas: tuple[str, str], defer: list[str]
) -> None:
    # Before: a lease's owner was hostname:pid, and a holder whose pid did not run here was
    # taken for dead at once. Two migrates with the same hostname in PID namespaces of their own
    # (containers, cloned VMs) took each other's live segments and died on the duplicate key.
    table = _table(fast_dynamo, 12_000)
    fast_dynamo.latency = 0.2  # both at work at once, on every segment
    cmd = migrate_cmd(pg_dsn, fast_dynamo.endpoint, schemas, "--table", table, "--segments", "16", *defer)
    # One host starts a few processes first: the two sets of pids differ, so each sees the other's
    # pids as processes that do not run.
    shift = "for i in 1 2 3 4 5 6 7 8; do /bin/true; done; "
    runs = [
        [
            "unshare",
            "--uts",
            "--pid",
            "--fork",
            "--mount-proc",
            "sh",
            "-c",
            f'hostname podyn-host; {s}exec "$@"',
            "sh",
            *cmd,
        ]
        for s in ("", shift)
    ]
    with running(runs[0]) as a, running(runs[1]) as b:
        assert a.finish(timeout=240) == 0, a.stderr()
        assert b.finish(timeout=240) == 0, b.stderr()
        for run in (a, b):
            assert not _said(run.stderr(), TAKEN_OVER), run.stderr()
    _exact(pg_dsn, schemas, table, 12_000)


@pytest.mark.parametrize("defer", DEFER)
def test_pages_slower_than_the_lease_change_no_hands(
    pg_dsn: str, fast_dynamo: ScanServer, schemas: tuple[str, str], defer: list[str]
) -> None:
    # Each page takes longer than the whole lease: only the heartbeat keeps the segments with
    # their holders (before, a lease was renewed only when its transaction committed).
    table = _table(fast_dynamo, 5_000)
    fast_dynamo.latency = 5.0
    args = ["--table", table, "--segments", "2", "--workers", "2", "--lease-seconds", "4", *defer]
    done = subprocess.run(
        migrate_cmd(pg_dsn, fast_dynamo.endpoint, schemas, *args),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert not _said(done.stderr, TAKEN_OVER) and not _said(done.stderr, STEPPED_ASIDE), done.stderr
    _exact(pg_dsn, schemas, table, 5_000)


@pytest.mark.parametrize("defer", DEFER)
def test_a_holder_frozen_past_its_lease_is_taken_over_and_steps_aside(
    pg_dsn: str, fast_dynamo: ScanServer, schemas: tuple[str, str], defer: list[str]
) -> None:
    table = _table(fast_dynamo, 40_000)
    fast_dynamo.latency = 0.5
    args = ["--table", table, "--segments", "4", "--workers", "2", "--lease-seconds", "4", *defer]
    cmd = migrate_cmd(pg_dsn, fast_dynamo.endpoint, schemas, *args)
    with running(["setsid", *cmd]) as frozen:
        # Frozen at work on two segments, past its first commit: frozen inside the ALTER TABLE that
        # adds the columns, it would hold the table's lock and stop every other loader with it.
        deadline = time.monotonic() + 60
        while len(segment_holders(pg_dsn, schemas[1])) < 2 or committed_items(pg_dsn, schemas[1], table) == 0:
            assert time.monotonic() < deadline and frozen.alive(), frozen.stderr()
            time.sleep(0.1)
        group = os.getpgid(frozen.proc.pid)
        os.killpg(group, signal.SIGSTOP)
        try:
            with running(cmd) as other:
                # Its own segments at once, the frozen one's once their leases run out.
                other.wait_for(lambda: _all_done(pg_dsn, schemas[1], table), "every segment loaded", timeout=180)
                os.killpg(group, signal.SIGCONT)
                assert other.finish(timeout=120) == 0, other.stderr()
                assert _said(other.stderr(), TAKEN_OVER), other.stderr()
        finally:
            os.killpg(group, signal.SIGCONT)
        # Thawed, it finds its segments taken: its transactions roll back, and it ends as a load
        # that is done.
        assert frozen.finish(timeout=120) == 0, frozen.stderr()
        assert _said(frozen.stderr(), STEPPED_ASIDE), frozen.stderr()
    _exact(pg_dsn, schemas, table, 40_000)


def test_a_takeover_ends_only_the_previous_holders_sessions(
    pg_dsn: str, fast_dynamo: ScanServer, schemas: tuple[str, str]
) -> None:
    # A takeover ends the sessions named after the previous holder's token, and no other: not
    # those of an owner an older version wrote (hostname:pid, no token), nor anyone else's.
    table = _table(fast_dynamo, 3_000)
    base = migrate_cmd(pg_dsn, fast_dynamo.endpoint, schemas, "--table", table, "--segments", "4")
    assert subprocess.run([*base, "--schema"], capture_output=True, check=False).returncode == 0
    with psycopg.connect(pg_dsn, autocommit=True, application_name="podyn-fast migrate bystander") as bystander:
        bystander.execute(
            sql.SQL(
                "UPDATE {} SET owner = CASE segment WHEN 0 THEN 'oldhost:4242' ELSE %s END,"
                " lease_until = now() - interval '1 minute' WHERE segment IN (0, 1)"
            ).format(sql.Identifier(schemas[1], "segments")),
            ["gone-host:1:boot/1:1:feedfacecafe"],
        )
        done = subprocess.run(base, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stderr.count(TAKEN_OVER) == 2, done.stderr
        assert bystander.execute("SELECT 1").fetchone() == (1,)
    _exact(pg_dsn, schemas, table, 3_000)
