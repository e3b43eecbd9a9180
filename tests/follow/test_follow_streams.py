"""`podyn-fast follow` over our Streams server: splits, SIGKILL at random moments, expiring
iterators, throttling, and the gaps that must stop a table (trimmed records, a new stream).

Each test loads the table with `migrate`, writes changes through the server's Python API, runs
`follow` as a subprocess and compares PostgreSQL with the server's final table, row by row.
"""

from __future__ import annotations

import json
import os
import random
import signal
import string
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import pytest
from psycopg import sql

from podyn_fast import state
from tests import reference
from tests.fix_pg import applied_records
from tests.moto_migrate import PODYN
from tests.proc import running
from tests.servers.streams import StreamsServer

KEYS = (("pk", "S"), ("sk", "N"))


class Env:
    """A target and a state schema, and the commands that fill them from the Streams server."""

    def __init__(self, dsn: str, server: StreamsServer) -> None:
        tag = uuid.uuid4().hex[:8]
        self.dsn, self.server = dsn, server
        self.target, self.state = f"s_{tag}", f"s_{tag}_state"

    def _cmd(self, command: str, *args: str) -> list[str]:
        common = ["--postgres-url", self.dsn, "--endpoint-url", self.server.endpoint, "--region", "us-east-1"]
        common += ["--state-schema", self.state]
        if command == "migrate":
            common += ["--target-schema", self.target, "--no-progress"]
        return [PODYN, command, *common, *args]

    def migrate(self, *args: str) -> None:
        done = subprocess.run(self._cmd("migrate", *args), capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr

    def follow(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        cmd = self._cmd("follow", "--exit-when-idle", "1", *args)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)

    def start_follow(self) -> subprocess.Popen[str]:
        cmd = self._cmd("follow", "--exit-when-idle", "1")
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def check(self, table: str, rejected: Sequence[str] = ()) -> None:
        """PostgreSQL holds exactly the server's final table, but for the items of the partition
        keys ``rejected``."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            found = state.get_table(conn, self.state, table)
            assert found is not None
            layout = state.layout(conn, self.state, found)
            items = [i for i in self.server.snapshot(table).values() if i["pk"]["S"] not in rejected]
            reference.check_table(conn, self.target, found.target_table, layout, items)

    def rejects(self, table: str) -> list[tuple[str, str, str]]:
        """(partition key, raw item, reason) of each reject."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            rows = conn.execute(
                sql.SQL("SELECT key, item, reason FROM {}.rejects WHERE table_name = %s ORDER BY key").format(
                    sql.Identifier(self.state)
                ),
                [table],
            ).fetchall()
        return [(json.loads(key)["pk"]["S"], bytes(item).decode(), reason) for key, item, reason in rows]

    def shards(self) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            return conn.execute(
                sql.SQL("SELECT shard_id, parent_shard_id, finished, records FROM {}.shards").format(
                    sql.Identifier(self.state)
                )
            ).fetchall()

    def drop(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for s in (self.target, self.state):
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(s)))


@pytest.fixture
def env(pg_dsn: str, streams_server: StreamsServer) -> Iterator[Env]:
    e = Env(pg_dsn, streams_server)
    yield e
    e.drop()


def _item(rng: random.Random, key: int) -> dict[str, Any]:
    item: dict[str, Any] = {"pk": {"S": f"k{key % 250}"}, "sk": {"N": str(key // 250)}}
    for name in rng.sample(["a", "b", "c", "d", "e", "f"], rng.randrange(0, 5)):
        item[name] = rng.choice(
            [
                {"S": f"s{rng.random()}"},
                {"N": str(rng.randrange(-1000, 1000))},
                {"BOOL": rng.random() < 0.5},
                {"SS": ["x", "y"]},
                {"M": {"n": {"N": "1.50"}, "l": {"L": [{"S": "v"}, {"NULL": True}]}}},
            ]
        )
    return item


def _changes(server: StreamsServer, table: str, rng: random.Random, n: int, splits: int = 0) -> int:
    """``n`` random puts, updates and deletes over 1,000 keys, with ``splits`` shard splits spread
    in; returns how many stream records they made (a write that changes nothing makes none)."""
    split_at = {n * (s + 1) // (splits + 1) for s in range(splits)}
    records = 0
    for i in range(n):
        key = rng.randrange(1000)
        roll = rng.random()
        if roll < 0.15:
            item = _item(rng, key)
            made = server.delete(table, {"pk": item["pk"], "sk": item["sk"]})
        elif roll < 0.3:
            item = _item(rng, key)
            made = server.update(table, {"pk": item["pk"], "sk": item["sk"]}, set={"u": {"N": str(i)}}, remove=["a"])
        else:
            made = server.put(table, _item(rng, key))
        records += made is not None
        if i in split_at:
            server.split(table)
    return records


def _table(server: StreamsServer, name: str, rng: random.Random, items: int = 500) -> None:
    server.create_table(name, KEYS, view_type="NEW_AND_OLD_IMAGES", shards=4)
    for key in range(items):
        server.put(name, _item(rng, key))


def _applied(env: Env) -> int:
    return applied_records(env.dsn, env.state)


def test_splits_and_sigkill_at_random_moments(env: Env) -> None:
    """20,000 changes in 20 rounds of 1,000 (two of them with a shard split): each round starts a
    follower and SIGKILLs it at a random moment once it has applied something of its own."""
    rng = random.Random(11)
    _table(env.server, "Tbl", rng)
    env.migrate("--table", "Tbl")
    env.server.latency = 0.005  # a round takes long enough for the kill to land inside it
    kills = 0
    try:
        for round_ in range(20):
            _changes(env.server, "Tbl", rng, 1_000, splits=1 if round_ in (5, 13) else 0)
            before = _applied(env)
            proc = env.start_follow()
            deadline = time.monotonic() + 30
            while proc.poll() is None and _applied(env) <= before and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.2))
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
            proc.communicate(timeout=30)
    finally:
        env.server.latency = 0.0
    assert kills >= 15, f"only {kills} of 20 rounds were killed in the middle"
    print(f"{kills} SIGKILLs across 20,000 changes")
    done = env.follow()
    assert done.returncode == 0, done.stderr
    env.check("Tbl")
    shards = env.shards()
    # 4 root shards, split twice into 2 children each: 4 + 8 + 16.
    assert len(shards) == 28, shards
    assert sum(1 for s in shards if s[1] is not None) == 24
    assert all(s[2] for s in shards if any(c[1] == s[0] for c in shards)), "a parent left unfinished"


def test_one_transaction_applies_what_several_shards_had(env: Env) -> None:
    """A backlog over 4 shards is read from all of them at once and applied in one transaction
    with the four checkpoints (a checkpoint's updated_at is its transaction's start)."""
    rng = random.Random(5)
    _table(env.server, "Tbl", rng)
    env.migrate("--table", "Tbl")
    _changes(env.server, "Tbl", rng, 2_000)
    done = env.follow()
    assert done.returncode == 0, done.stderr
    env.check("Tbl")
    with psycopg.connect(env.dsn, autocommit=True) as conn:
        rows = conn.execute(
            sql.SQL("SELECT shard_id, updated_at FROM {}.shards WHERE records > 0").format(sql.Identifier(env.state))
        ).fetchall()
    assert len(rows) == 4, rows
    assert len({updated_at for _, updated_at in rows}) == 1, rows


def test_a_thousand_shards_with_splits(env: Env) -> None:
    """A stream of 1,000 shards, rolled over (each closed, with a child) between two sets of
    changes: every shard is read in lineage order and PostgreSQL ends exact."""
    rng = random.Random(17)
    env.server.create_table("Wide", KEYS, view_type="NEW_AND_OLD_IMAGES", shards=1_000)
    for key in range(500):
        env.server.put("Wide", _item(rng, key))
    env.migrate("--table", "Wide")
    _changes(env.server, "Wide", rng, 3_000)
    env.server.split("Wide", children=1)
    _changes(env.server, "Wide", rng, 3_000)
    done = env.follow(timeout=300)
    assert done.returncode == 0, done.stderr
    env.check("Wide")
    shards = env.shards()
    # Every parent is read to its end (a child only after it), no child is; every record written
    # is applied once (a shard that never had one has no checkpoint unless it ended).
    finished = {s[0] for s in shards if s[2]}
    assert len(finished) == 1_000
    assert all(s[1] in finished for s in shards if s[1] is not None), "a child read before its parent ended"
    assert sum(s[3] for s in shards) == env.server.stats("Wide").records_written


def test_splits_and_expired_iterators_at_the_worst_moments(env: Env) -> None:
    """Shards split right after a GetRecords answered (the follower holds records it has not yet
    committed) and right after a checkpoint committed, 8 times, while every iterator expires
    within 50 ms; the follower runs throughout, then a last run must leave the table exact."""
    rng = random.Random(15)
    # One shard to start with: each split doubles the open shards (2**8 leaves at the end).
    env.server.create_table("Tbl", KEYS, view_type="NEW_AND_OLD_IMAGES", shards=1)
    for key in range(500):
        env.server.put("Tbl", _item(rng, key))
    env.migrate("--table", "Tbl")
    ttl = env.server.iterator_ttl
    env.server.iterator_ttl = 0.05
    env.server.latency = 0.002
    moments = {"after a GetRecords": 0, "after a checkpoint": 0}
    proc = subprocess.Popen(env._cmd("follow"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for round_ in range(8):
            moment = "after a GetRecords" if round_ % 2 == 0 else "after a checkpoint"
            served, committed = env.server.stats("Tbl").records, _applied(env)
            _changes(env.server, "Tbl", rng, 200)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and proc.poll() is None:
                if moment == "after a GetRecords" and env.server.stats("Tbl").records > served:
                    break
                if moment == "after a checkpoint" and _applied(env) > committed:
                    break
                time.sleep(0.0005)
            assert proc.poll() is None, proc.communicate()[1]
            env.server.split("Tbl")
            moments[moment] += 1
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        env.server.iterator_ttl = ttl
        env.server.latency = 0.0
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert moments == {"after a GetRecords": 4, "after a checkpoint": 4}
    _changes(env.server, "Tbl", rng, 200)  # the last children get records too
    done = env.follow()
    assert done.returncode == 0, done.stderr
    env.check("Tbl")
    shards = env.shards()
    assert all(s[2] for s in shards if any(c[1] == s[0] for c in shards)), "a parent left unfinished"
    print(f"{len(shards)} shards after 8 splits at the worst moments")


def test_expired_iterators_and_throttling_recover(env: Env) -> None:
    rng = random.Random(12)
    _table(env.server, "Tbl", rng)
    env.migrate("--table", "Tbl")
    _changes(env.server, "Tbl", rng, 3_000, splits=1)
    # Iterators last a fraction of a second, and a quarter of GetRecords calls are throttled.
    env.server.iterator_ttl = 0.2
    env.server.latency = 0.02
    env.server.set_faults(throttle_rate=0.25, fault_operations=["GetRecords"])
    done = env.follow()
    assert done.returncode == 0, done.stderr
    env.server.reset_faults()
    env.check("Tbl")
    assert env.server.stats("Tbl").throttles > 0
    # Idle at the head of every shard when it exits: no lag (not the age of the last change).
    assert "0.0 s" in done.stderr, done.stderr


def test_trimmed_records_stop_that_table_only(env: Env) -> None:
    rng = random.Random(13)
    _table(env.server, "Aaa", rng)
    _table(env.server, "Bbb", rng)
    env.migrate("--table", "Aaa,Bbb")
    _changes(env.server, "Aaa", rng, 500)
    _changes(env.server, "Bbb", rng, 500)
    assert env.follow().returncode == 0
    # More changes to A that are trimmed before the follower reads them: a gap.
    _changes(env.server, "Aaa", rng, 300)
    env.server.advance_clock(3600)
    _changes(env.server, "Bbb", rng, 300)
    assert env.server.trim("Aaa", before_seconds_ago=60) > 0
    done = env.follow()
    assert done.returncode == 1
    message = " ".join(done.stderr.split())
    assert "'Aaa'" in message and "trimmed" in message and "re-migrate" in message, done.stderr
    assert "Traceback" not in done.stderr
    env.check("Bbb")  # the other table went on to the end
    with psycopg.connect(env.dsn, autocommit=True) as conn:
        stopped = conn.execute(
            sql.SQL("SELECT table_name, stopped IS NOT NULL FROM {}.tables ORDER BY 1").format(
                sql.Identifier(env.state)
            )
        ).fetchall()
    assert stopped == [("Aaa", True), ("Bbb", False)]
    # `status` shows which table stopped and why.
    shown = subprocess.run(
        [PODYN, "status", "--postgres-url", env.dsn, "--state-schema", env.state, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    tables = {t["table"]: t for t in json.loads(shown.stdout)["tables"]}
    assert tables["Aaa"]["phase"] == "stopped" and "trimmed" in tables["Aaa"]["last_error"]
    assert tables["Bbb"]["phase"] == "following" and tables["Bbb"]["last_error"] is None


def test_a_new_stream_stops_the_table(env: Env) -> None:
    rng = random.Random(14)
    _table(env.server, "Aaa", rng)
    env.migrate("--table", "Aaa")
    _changes(env.server, "Aaa", rng, 200)
    assert env.follow().returncode == 0
    env.check("Aaa")
    env.server.new_stream("Aaa")
    _changes(env.server, "Aaa", rng, 100)
    done = env.follow()
    assert done.returncode == 1
    message = " ".join(done.stderr.split())
    assert "stream changed" in message and "Re-migrate" in message, done.stderr


def test_sigterm_finishes_the_batch_and_exits_zero(env: Env) -> None:
    rng = random.Random(15)
    _table(env.server, "Tbl", rng)
    env.migrate("--table", "Tbl")
    _changes(env.server, "Tbl", rng, 5_000, splits=1)
    env.server.latency = 0.01  # a slower stream, so the signal lands mid-run
    proc = subprocess.Popen(env._cmd("follow"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.0)
    assert proc.poll() is None, "follow without --exit-when-idle must keep running"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "changes applied" in " ".join(err.split()) and "Traceback" not in err
    env.server.latency = 0.0
    assert env.follow().returncode == 0
    env.check("Tbl")


def test_an_upsert_clears_columns_added_after_the_follower_started(env: Env) -> None:
    # The follower starts while the table is being created, before the load registers the columns
    # `x` and `y`; the item then loses both. Its whole-row upsert must clear them, although the
    # follower's first layout had no such column and the change names none.
    server = env.server
    server.create_table("Late", list(KEYS), view_type=None)
    key = {"pk": {"S": "k"}, "sk": {"N": "0"}}
    server.put("Late", {**key, "x": {"S": "old"}, "y": {"N": "1"}})
    server.enable_stream("Late")
    env.migrate("--table", "Late", "--schema")  # the table is created, nothing loaded
    with running(env._cmd("follow")) as follower:
        follower.wait_for(lambda: _heartbeat_seen(env, "Late"), "the follower started")
        env.migrate("--table", "Late", "--data")  # registers x and y, and loads the item with them
        server.put("Late", key)
        follower.wait_for(lambda: applied_records(env.dsn, env.state) >= 1, "the change applied")
        follower.proc.send_signal(signal.SIGTERM)
        assert follower.finish(timeout=60) == 0, follower.stderr()
    env.check("Late")


def _heartbeat_seen(env: Env, table: str) -> bool:
    with psycopg.connect(env.dsn, autocommit=True) as conn:
        row = conn.execute(
            sql.SQL("SELECT follow_heartbeat IS NOT NULL FROM {} WHERE table_name = %s").format(
                sql.Identifier(env.state, "tables")
            ),
            [table],
        ).fetchone()
    return bool(row and row[0])


def test_a_stream_turned_off_stops_the_table(env: Env) -> None:
    # Before: the follower read the closed shards to their end and exited 0 (or waited forever).
    server = env.server
    server.create_table("Off", list(KEYS), shards=2)
    for i in range(20):
        server.put("Off", {"pk": {"S": f"k{i}"}, "sk": {"N": "0"}})
    env.migrate("--table", "Off")
    with running(env._cmd("follow", "--table", "Off")) as follower:
        follower.wait_for(lambda: applied_records(env.dsn, env.state) >= 20, "the load's changes applied")
        for i in range(20):
            server.put("Off", {"pk": {"S": f"k{i}"}, "sk": {"N": "0"}, "v": {"N": str(i)}})
        server.disable_stream("Off")
        assert follower.finish(timeout=60) == 1, follower.stderr()
        message = " ".join(follower.stderr().split())
    assert "its stream was turned off" in message, message
    env.check("Off")  # every change recorded before is applied


def test_a_stream_enabled_after_the_load_began_is_a_gap(env: Env) -> None:
    # Before: the follower took the new stream as its own and applied from there, silently missing
    # every change made between the load and the stream.
    server = env.server
    server.create_table("Late2", list(KEYS), view_type=None)
    for i in range(10):
        server.put("Late2", {"pk": {"S": f"k{i}"}, "sk": {"N": "0"}})
    env.migrate("--table", "Late2")
    server.put("Late2", {"pk": {"S": "k0"}, "sk": {"N": "0"}, "lost": {"S": "not captured"}})
    server.enable_stream("Late2")
    done = env.follow("--table", "Late2")
    assert done.returncode == 1, done.stderr
    assert "was enabled after the load began" in " ".join(done.stderr.split()), done.stderr
    status = [PODYN, "status", "--postgres-url", env.dsn, "--state-schema", env.state, "--json"]
    shown = subprocess.run(status, capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(shown.stdout)["tables"][0]["phase"] == "stopped"  # a rerun is refused too


def test_a_first_follow_after_the_stream_kept_its_records_is_a_gap(env: Env) -> None:
    # Before: a first follow read every shard from TRIM_HORIZON, which silently starts after what
    # the stream has dropped: the changes from the start of a load 25 hours ago.
    server = env.server
    server.create_table("Old", list(KEYS))
    server.put("Old", {"pk": {"S": "k"}, "sk": {"N": "0"}})
    env.migrate("--table", "Old")
    with psycopg.connect(env.dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("UPDATE {} SET load_started_at = now() - interval '25 hours'").format(
                sql.Identifier(env.state, "tables")
            )
        )
    done = env.follow("--table", "Old")
    assert done.returncode == 1, done.stderr
    message = " ".join(done.stderr.split())
    assert "its load began 25.0 hours ago and its stream was never read" in message, message


def test_changes_that_cannot_be_stored_become_rejects_and_leave_no_row(env: Env) -> None:
    # Before: a row PostgreSQL refused (past its 8 kB page, or a key past its btree entry) ended
    # the follower, and every rerun, on the same batch; an image the core rejected left the row of
    # the item's older image in place, and follow said nothing and exited 0.
    server, rng = env.server, random.Random(11)
    server.create_table("Odd", [("pk", "S"), ("sk", "S")], shards=1)
    for i in range(10):
        server.put("Odd", {"pk": {"S": f"k{i}"}, "sk": {"S": "0"}, "v": {"S": "old"}})
    env.migrate("--table", "Odd")
    # DynamoDB's longest keys (2,048 and 1,024 bytes): past what a btree entry holds (2,704 bytes).
    server.put(
        "Odd",
        {
            "pk": {"S": "long" + "".join(rng.choices(string.ascii_letters, k=2044))},
            "sk": {"S": "".join(rng.choices(string.ascii_letters, k=1024))},
        },
    )
    server.put("Odd", {"pk": {"S": "k3"}, "sk": {"S": "0"}, "v": {"S": "new"}})
    # 1,100 small numbers, each a column that cannot be TOASTed: past PostgreSQL's 8 kB page.
    server.put("Odd", {"pk": {"S": "k1"}, "sk": {"S": "0"}} | {f"n{j}": {"N": f"{j}.123456"} for j in range(1100)})
    server.put("Odd", {"pk": {"S": "k2"}, "sk": {"S": "0"}, "v": {"S": "bad\u0000"}})  # no text holds U+0000
    server.delete("Odd", {"pk": {"S": "k4"}, "sk": {"S": "0"}})
    server.put("Odd", {"pk": {"S": "k5"}, "sk": {"S": "0"}, "v": {"S": "newer"}})

    done = env.follow()
    message = " ".join(done.stderr.split())
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in message and "3 item(s) could not be represented" in message, message
    rejects = env.rejects("Odd")
    assert [pk[:4] for pk, _, _ in rejects] == ["k1", "k2", "long"], rejects
    assert "row is too big" in rejects[0][2] and "U+0000" in rejects[1][2] and "index row size" in rejects[2][2]
    assert json.loads(rejects[0][1])["n7"] == {"N": "7.123456"}, "the reject keeps the raw item"
    env.check("Odd", rejected=[pk for pk, _, _ in rejects])
    # Applied and checkpointed: a rerun finds nothing to do and nothing new to reject.
    again = env.follow()
    assert again.returncode == 0 and len(env.rejects("Odd")) == 3, again.stderr


def test_the_follower_rides_out_a_streams_outage(env: Env) -> None:
    # botocore tries each call once (AWS_MAX_ATTEMPTS=1), so every failure reaches the follower's
    # own retries; for 4 s every Streams call fails, then the follower must carry on, exactly.
    rng = random.Random(13)
    _table(env.server, "Out", rng, items=100)
    env.migrate("--table", "Out")
    with running(env._cmd("follow"), env={"AWS_MAX_ATTEMPTS": "1"}) as follower:
        follower.wait_for(lambda: _heartbeat_seen(env, "Out"), "the follower started")
        _changes(env.server, "Out", rng, 300)
        env.server.set_faults(error_rate=1.0, fault_operations=["GetRecords", "GetShardIterator", "DescribeStream"])
        time.sleep(4)
        env.server.reset_faults()
        assert follower.alive(), follower.stderr()
        _changes(env.server, "Out", rng, 300)
        records = len(env.server.records("Out"))  # the table's first items' too
        follower.wait_for(lambda: _applied(env) >= records, "every change applied", timeout=90)
        follower.proc.send_signal(signal.SIGTERM)
        assert follower.finish(timeout=60) == 0, follower.stderr()
        assert "failed (InternalServerError" in " ".join(follower.stderr().split()), follower.stderr()
    env.check("Out")


def test_a_cutover_from_start_to_end(env: Env) -> None:
    # The path a user takes, in one piece: `migrate --follow` while the table is written and its
    # shards split; the follower killed once it follows; more writes and splits while nobody
    # follows; a late `follow` that catches up; then `verify` and `status`, as before a cutover.
    rng, server = random.Random(21), env.server
    server.create_table("Shop", list(KEYS), view_type="NEW_AND_OLD_IMAGES", shards=2)
    for key in range(3000):
        server.put("Shop", _item(rng, key))
    server.latency = 0.02  # the load lasts long enough for the writes to land during it
    writes = threading.Thread(target=_changes, args=(server, "Shop", random.Random(22), 1500), kwargs={"splits": 1})
    try:
        with running(env._cmd("migrate", "--table", "Shop", "--segments", "8", "--follow")) as first:
            writes.start()
            writes.join()
            first.wait_for(lambda: _phase(env, "Shop") == "following", "the load done and following", timeout=120)
            first.wait_for(lambda: _applied(env) > 3000, "changes applied", timeout=120)
            first.proc.kill()
            first.proc.wait()
    finally:
        server.latency = 0.0
    _changes(server, "Shop", rng, 1500, splits=1)
    late = env.follow()
    assert late.returncode == 0, late.stderr
    env.check("Shop")
    shards = env.shards()
    assert all(s[2] for s in shards if any(c[1] == s[0] for c in shards)), "a parent left unfinished"
    assert len(shards) >= 2 + 4 + 8, shards  # two splits of every open shard
    common = ["--postgres-url", env.dsn, "--state-schema", env.state]
    verify = subprocess.run(
        [PODYN, "verify", *common, "--endpoint-url", server.endpoint, "--region", "us-east-1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert verify.returncode == 0 and "Shop: EQUAL" in verify.stdout, verify.stdout + verify.stderr
    status = subprocess.run([PODYN, "status", *common, "--json"], capture_output=True, text=True, check=True)
    (table,) = json.loads(status.stdout)["tables"]
    assert (table["phase"], table["rejects"], table["lag_seconds"]) == ("following", 0, 0.0), table
    assert table["changes_applied"] == len(server.records("Shop")), table


def _phase(env: Env, table: str) -> str | None:
    with psycopg.connect(env.dsn, autocommit=True) as conn:
        try:
            return state.phase(conn, env.state, table)
        except psycopg.errors.UndefinedTable:
            return None


def test_a_follower_started_only_after_the_load_catches_every_change(env: Env) -> None:
    # `migrate` without --follow while the table is written and its shards split, then `follow`
    # once the load is done: the stream held every change since the load began.
    rng, server = random.Random(23), env.server
    server.create_table("Late2", list(KEYS), view_type="NEW_AND_OLD_IMAGES", shards=2)
    for key in range(3000):
        server.put("Late2", _item(rng, key))
    server.latency = 0.02
    writes = threading.Thread(target=_changes, args=(server, "Late2", random.Random(24), 1500), kwargs={"splits": 1})
    try:
        with running(env._cmd("migrate", "--table", "Late2", "--segments", "8")) as load:
            writes.start()
            writes.join()
            assert load.finish(timeout=120) == 0, load.stderr()
    finally:
        server.latency = 0.0
    _changes(server, "Late2", rng, 500, splits=1)
    done = env.follow()
    assert done.returncode == 0, done.stderr
    env.check("Late2")
