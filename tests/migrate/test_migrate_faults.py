"""migrate under faults, over the fast Scan server with 200,000 items: kills, concurrency, throttling.

The first test loads the table without faults and checks every row against the independent
reference; the others load it under faults and must end with exactly the same rows (compared in
SQL, both ways, as multisets) with no duplicate and no gap.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from psycopg import sql

from podyn_fast import _core, state
from podyn_fast.dynamo.client import RawDynamo
from podyn_fast.errors import BodyChecksumError
from tests import reference
from tests.fix_pg import committed_items
from tests.servers.scan import TYPICAL_KEYS, ScanServer, TableSpec, typical_item

TABLE = "big"
# What the kill test kills, and how many times in all.
VICTIMS = ("coordinator", "workers", "worker")
KILL_MOMENTS = 20
ITEMS = 200_000
EXE = str(Path(sys.executable).parent / "podyn-fast")


@pytest.fixture(scope="module")
def big_table(scan_server: ScanServer) -> Iterator[ScanServer]:
    scan_server.add_table(TableSpec(TABLE, TYPICAL_KEYS, typical_item, ITEMS))
    scan_server.warm(TABLE)
    try:
        yield scan_server
    finally:
        scan_server.reset_faults()
        scan_server.remove_table(TABLE)


def _schemas(pg_dsn: str, *names: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


class Run:
    """One target schema and state schema, and the command that loads the big table into them."""

    def __init__(self, dsn: str, endpoint: str, *, workers: int = 2) -> None:
        tag = uuid.uuid4().hex[:8]
        self.dsn, self.target, self.state = dsn, f"f_{tag}", f"f_{tag}_state"
        self.cmd = [
            EXE,
            "migrate",
            "--postgres-url",
            dsn,
            "--endpoint-url",
            endpoint,
            "--region",
            "us-east-1",
            "--table",
            TABLE,
            "--workers",
            str(workers),
            "--segments",
            "16",
            "--batch-mb",
            "1",  # many small transactions: more moments to be killed between and inside
            "--target-schema",
            self.target,
            "--state-schema",
            self.state,
            "--no-progress",
        ]

    def start(self) -> subprocess.Popen[str]:
        return subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run(self, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.cmd, capture_output=True, text=True, timeout=timeout, check=False)

    def drop(self) -> None:
        _schemas(self.dsn, self.target, self.state)


@pytest.fixture(scope="module")
def golden(pg_dsn: str, big_table: ScanServer) -> Iterator[Run]:
    """The table loaded without faults, checked row by row against the reference."""
    run = Run(pg_dsn, big_table.endpoint)
    done = run.run()
    assert done.returncode == 0, done.stderr
    yield run
    run.drop()


def _layout(conn: psycopg.Connection[Any], run: Run) -> _core.Layout:
    table = state.get_table(conn, run.state, TABLE)
    assert table is not None
    return state.layout(conn, run.state, table)


def test_load_is_exact(pg_dsn: str, golden: Run) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        items = (orjson.loads(typical_item(i)) for i in range(ITEMS))
        assert reference.check_table(conn, golden.target, TABLE, _layout(conn, golden), items) == ITEMS
        progress = state.progress(conn, golden.state, TABLE)
        assert (progress.items, progress.rejects, progress.segments_done) == (ITEMS, 0, 16)
        phase = conn.execute(sql.SQL("SELECT phase FROM {}.tables").format(sql.Identifier(golden.state))).fetchone()
        assert phase == ("loaded",)


def _same_as_golden(pg_dsn: str, run: Run, golden: Run) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        cols = sql.SQL(", ").join(map(sql.Identifier, _layout(conn, golden).column_names))
        assert _layout(conn, run).column_names == _layout(conn, golden).column_names

        def minus(a: Run, b: Run) -> int:
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM (SELECT {c} FROM {a}.{t} EXCEPT ALL SELECT {c} FROM {b}.{t}) d").format(
                    c=cols, a=sql.Identifier(a.target), b=sql.Identifier(b.target), t=sql.Identifier(TABLE)
                )
            ).fetchone()
            assert row is not None
            return int(row[0])

        count = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(run.target), sql.Identifier(TABLE))
        ).fetchone()
        assert count == (ITEMS,)
        assert (minus(run, golden), minus(golden, run)) == (0, 0)
        assert state.progress(conn, run.state, TABLE).items == ITEMS


def _workers_of(pid: int) -> list[int]:
    """The loader processes a migrate process spawned (not multiprocessing's resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        # Forked (the same command line as the migrate) or spawned (spawn_main): not the tracker.
        if ppid == pid and b"resource_tracker" not in cmdline:
            found.append(int(entry.name))
    return found


def _committed(run: Run) -> int:
    return committed_items(run.dsn, run.state, TABLE)


def _alive(pid: int) -> bool:
    """Running (not a zombie: orphans are reparented to an init that may never reap them)."""
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _finish(run: Run, attempts: int = 3) -> subprocess.CompletedProcess[str]:
    for _ in range(attempts):
        done = run.run()
        if done.returncode == 0:
            return done
    pytest.fail(f"migrate did not finish after {attempts} reruns:\n{done.stderr}")


def test_sigkill_workers_and_coordinator_then_rerun(pg_dsn: str, big_table: ScanServer, golden: Run) -> None:
    """SIGKILL at KILL_MOMENTS random moments (the coordinator, every worker, or one worker),
    rerunning after each; when a load ends, it must equal the golden one and the next starts."""
    rng = random.Random(20261127)
    kills = dict.fromkeys(VICTIMS, 0)
    loads = 0
    # A network-like delay per request stretches each load so that kills land inside it.
    big_table.latency = 0.01
    run = Run(pg_dsn, big_table.endpoint)
    try:
        while sum(kills.values()) < KILL_MOMENTS:
            before = _committed(run)
            proc = run.start()
            # Kill once this run has committed something of its own (it is in the middle of the
            # load, not starting up), at a random moment after that.
            deadline = time.monotonic() + 60
            while proc.poll() is None and _committed(run) <= before and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.3))
            workers = _workers_of(proc.pid)
            if proc.poll() is None:
                victim = rng.choice(VICTIMS)
                if victim == "coordinator" or not workers:
                    os.kill(proc.pid, signal.SIGKILL)
                else:
                    for pid in workers if victim == "workers" else [rng.choice(workers)]:
                        os.kill(pid, signal.SIGKILL)
                kills[victim] += 1
            # The pipes stay open until the workers are exiting too: orphans must not live on. A
            # process closes its files before it has quite exited: give it a moment to be gone.
            proc.communicate(timeout=120)
            gone_by = time.monotonic() + 5
            while [w for w in workers if _alive(w)] and time.monotonic() < gone_by:
                time.sleep(0.05)
            assert not [w for w in workers if _alive(w)], "workers outlived their coordinator"
            if _committed(run) >= ITEMS * 0.9 or proc.returncode == 0:
                # This load is nearly or wholly done: finish it, check it, and start another.
                big_table.latency = 0.0
                _finish(run)
                _same_as_golden(pg_dsn, run, golden)
                run.drop()
                loads += 1
                big_table.latency = 0.01
                run = Run(pg_dsn, big_table.endpoint)
        big_table.latency = 0.0
        _finish(run)
        _same_as_golden(pg_dsn, run, golden)
        loads += 1
        assert all(kills.values()), kills
        print(f"{sum(kills.values())} kills {kills} across {loads} loads of {ITEMS:,} items, each exact")
    finally:
        big_table.reset_faults()
        run.drop()


def test_two_migrates_at_once(pg_dsn: str, big_table: ScanServer, golden: Run) -> None:
    run = Run(pg_dsn, big_table.endpoint)
    try:
        procs = [run.start(), run.start()]
        outs = [p.communicate(timeout=300) for p in procs]
        # Both end when the whole table is loaded: the one that runs out of segments first waits.
        assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
        assert all("│ loaded │" in err for _, err in outs), [err for _, err in outs]
        _same_as_golden(pg_dsn, run, golden)
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            owners = conn.execute(
                sql.SQL("SELECT count(*) FROM {}.segments WHERE owner IS NOT NULL OR NOT done").format(
                    sql.Identifier(run.state)
                )
            ).fetchone()
            assert owners == (0,)
    finally:
        run.drop()


def test_the_survivor_of_two_migrates_finishes_the_load(pg_dsn: str, big_table: ScanServer, golden: Run) -> None:
    # Two migrates share the load; one is killed with its workers once both have committed: the
    # other takes its segments over (their holders are dead) and ends with the whole table.
    run = Run(pg_dsn, big_table.endpoint)
    big_table.latency = 0.01
    try:
        first, second = run.start(), run.start()
        deadline = time.monotonic() + 60
        while _committed(run) < ITEMS // 4 and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.02)
        workers = _workers_of(first.pid)
        assert first.poll() is None, "finished before the kill"
        for pid in [first.pid, *workers]:
            os.kill(pid, signal.SIGKILL)
        first.communicate(timeout=60)
        _, stderr = second.communicate(timeout=300)
        assert second.returncode == 0, stderr
        assert "│ loaded │" in stderr, stderr
        big_table.reset_faults()
        _same_as_golden(pg_dsn, run, golden)
    finally:
        big_table.reset_faults()
        run.drop()


def test_throttling_and_server_errors(pg_dsn: str, big_table: ScanServer, golden: Run) -> None:
    run = Run(pg_dsn, big_table.endpoint)
    big_table.reset_stats()
    big_table.set_faults(throttle_rate=0.2, error_rate=0.05, crc_error_rate=0.05)
    try:
        done = run.run()
        assert done.returncode == 0, done.stderr
        stats = big_table.stats(TABLE)
        assert stats.throttles > 0 and stats.errors > 0 and stats.crc_errors > 0
        _same_as_golden(pg_dsn, run, golden)
    finally:
        big_table.reset_faults()
        run.drop()


def test_a_body_that_never_passes_its_checksum_stops_the_load(pg_dsn: str, big_table: ScanServer) -> None:
    """No page that failed its CRC32 may be loaded, even when botocore gives up retrying."""
    big_table.set_faults(crc_error_rate=1.0)
    try:
        raw = RawDynamo(endpoint_url=big_table.endpoint, region="us-east-1", max_attempts=2)
        with pytest.raises(BodyChecksumError):
            raw.scan_page(TABLE, segment=0, total_segments=16)
    finally:
        big_table.reset_faults()
