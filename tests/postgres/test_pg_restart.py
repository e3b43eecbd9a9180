"""PostgreSQL restarted under a load and under a follower, on a server of this module's own.

migrate and follow both reconnect with backoff and carry on from what was committed, in the same
process, ending exact.
"""

from __future__ import annotations

import logging
import random
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator

import orjson
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from podyn_fast import state
from podyn_fast.embedded.postgres import EmbeddedPostgres
from podyn_fast.postgres import connect
from tests import reference
from tests.fix_pg import applied_records, committed_items
from tests.fix_scan_server import TYPICAL, TYPICAL_COUNT
from tests.moto_migrate import PODYN
from tests.proc import running
from tests.servers.pg_proxy import KINDS, POINTS, PgProxy
from tests.servers.scan import ScanServer, typical_item
from tests.servers.streams import StreamsServer

KEYS = [("pk", "S"), ("sk", "N")]


@pytest.fixture(scope="module")
def own_pg() -> Iterator[EmbeddedPostgres]:
    with EmbeddedPostgres() as server:
        yield server


def test_migrate_rides_out_a_restart(own_pg: EmbeddedPostgres, fast_dynamo: ScanServer) -> None:
    dsn = own_pg.dsn
    tag = uuid.uuid4().hex[:8]
    target, state_schema = f"p_{tag}", f"p_{tag}_state"
    cmd = [
        PODYN, "migrate", "--postgres-url", dsn, "--endpoint-url", fast_dynamo.endpoint, "--region", "us-east-1",
        "--table", TYPICAL, "--batch-mb", "1", "--segments", "8", "--target-schema", target,
        "--state-schema", state_schema, "--no-progress",
    ]  # fmt: skip
    # Six pages in, with most of the table still to read, the source stalls for 10 s: the restart
    # lands in the middle of the load, whatever this machine's speed.
    fast_dynamo.stall(10, after_pages=6)
    with running(cmd) as proc:
        proc.wait_for(lambda: committed_items(dsn, state_schema, TYPICAL) > 0, "the first rows committed")
        own_pg.restart(down_seconds=2)
        assert proc.finish(timeout=120) == 0, proc.stderr()
        stderr = proc.stderr()
    # The loaders and the coordinator reconnect with backoff and finish the load themselves.
    assert "reconnected to PostgreSQL" in stderr and "Traceback" not in stderr, stderr
    with psycopg.connect(dsn, autocommit=True) as conn:
        found = state.get_table(conn, state_schema, TYPICAL)
        assert found is not None
        items = (orjson.loads(typical_item(i)) for i in range(TYPICAL_COUNT))
        layout = state.layout(conn, state_schema, found)
        assert reference.check_table(conn, target, TYPICAL, layout, items) == TYPICAL_COUNT


def test_follow_reconnects_and_ends_exact(own_pg: EmbeddedPostgres, streams_server: StreamsServer) -> None:
    dsn = own_pg.dsn
    tag = uuid.uuid4().hex[:8]
    target, state_schema = f"q_{tag}", f"q_{tag}_state"
    rng = random.Random(31)
    server = streams_server
    server.create_table("Tbl", KEYS, view_type="NEW_AND_OLD_IMAGES", shards=4)
    for i in range(300):
        server.put("Tbl", {"pk": {"S": f"k{i}"}, "sk": {"N": "0"}, "v": {"N": str(i)}})
    common = ["--postgres-url", dsn, "--endpoint-url", server.endpoint, "--region", "us-east-1"]
    common += ["--state-schema", state_schema]
    migrate = [PODYN, "migrate", *common, "--target-schema", target, "--no-progress", "--table", "Tbl"]
    assert subprocess.run(migrate, capture_output=True, text=True, timeout=120, check=False).returncode == 0

    def write(n: int) -> None:
        _write(server, "Tbl", rng, n, keys=600)

    write(3000)
    server.latency = 0.01  # slow enough that the restart lands while changes are applied
    follow = [PODYN, "follow", *common, "--exit-when-idle", "3"]
    try:
        with running(follow) as proc:
            proc.wait_for(lambda: applied_records(dsn, state_schema) > 0, "the first changes applied")
            writer = threading.Thread(target=write, args=(2000,))
            writer.start()  # changes keep coming while PostgreSQL is down
            own_pg.restart(down_seconds=3)
            writer.join()
            assert proc.finish(timeout=180) == 0, proc.stderr()
            stderr = proc.stderr()
    finally:
        server.latency = 0.0
    assert "reconnected to PostgreSQL" in stderr, stderr
    _follow_exact(dsn, state_schema, target, server, "Tbl")


def _write(server: StreamsServer, table: str, rng: random.Random, n: int, *, keys: int) -> None:
    """``n`` random writes to ``table``: puts of a random value, one in five a delete."""
    for _ in range(n):
        key = {"pk": {"S": f"k{rng.randrange(keys)}"}, "sk": {"N": "0"}}
        if rng.random() < 0.2:
            server.delete(table, key)
        else:
            server.put(table, {**key, "v": {"N": str(rng.randrange(10**6))}})


def _via(proxy: PgProxy, own_pg: EmbeddedPostgres) -> str:
    # Unencrypted, so the proxy can read the protocol.
    return make_conninfo(own_pg.dsn, port=str(proxy.port), sslmode="disable", gssencmode="disable")


def _follow_exact(dsn: str, state_schema: str, target: str, server: StreamsServer, name: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        found = state.get_table(conn, state_schema, name)
        assert found is not None
        layout = state.layout(conn, state_schema, found)
        reference.check_table(conn, target, found.target_table, layout, list(server.snapshot(name).values()))


def test_follow_ends_the_session_a_network_drop_left_behind(
    own_pg: EmbeddedPostgres, streams_server: StreamsServer
) -> None:
    # The follower's table lock lives in its session: after a drop that the server does not see,
    # the reconnected follower must end its old session, or wait hours for TCP to notice.
    proxy = PgProxy(own_pg.port)
    dsn = own_pg.dsn
    tag = uuid.uuid4().hex[:8]
    target, state_schema = f"n_{tag}", f"n_{tag}_state"
    server = streams_server
    server.create_table("Net", KEYS, view_type="NEW_AND_OLD_IMAGES", shards=2)
    for i in range(100):
        server.put("Net", {"pk": {"S": f"k{i}"}, "sk": {"N": "0"}, "v": {"N": str(i)}})
    common = ["--endpoint-url", server.endpoint, "--region", "us-east-1", "--state-schema", state_schema]
    migrate = [PODYN, "migrate", "--postgres-url", dsn, *common, "--target-schema", target, "--no-progress"]
    assert subprocess.run(migrate, capture_output=True, text=True, timeout=120, check=False).returncode == 0
    follow = [PODYN, "follow", "--postgres-url", _via(proxy, own_pg), *common, "--exit-when-idle", "3"]
    try:
        with running(follow) as proc:
            for i in range(200):
                server.put("Net", {"pk": {"S": f"k{i}"}, "sk": {"N": "1"}, "v": {"N": str(i)}})
            proc.wait_for(lambda: applied_records(dsn, state_schema) > 0, "the first changes applied")
            proxy.reset_all()
            for i in range(200):
                server.put("Net", {"pk": {"S": f"k{i}"}, "sk": {"N": "2"}, "v": {"N": str(i)}})
            assert proc.finish(timeout=120) == 0, proc.stderr()
            stderr = proc.stderr()
    finally:
        proxy.close()
    assert "ending the previous session" in stderr and "reconnected to PostgreSQL" in stderr, stderr
    _follow_exact(dsn, state_schema, target, server, "Net")


def test_follow_survives_a_drop_at_every_point_of_its_apply_transaction(
    own_pg: EmbeddedPostgres, streams_server: StreamsServer
) -> None:
    """Each point of the apply transaction in turn (before the COPY, during it, before the COMMIT,
    after it before the answer), the connection reset or gone silent: the follower notices, ends
    its old session, reconnects and applies from its checkpoint, ending exact."""
    proxy = PgProxy(own_pg.port)
    dsn = own_pg.dsn
    tag = uuid.uuid4().hex[:8]
    target, state_schema = f"d_{tag}", f"d_{tag}_state"
    server = streams_server
    server.create_table("Drops", KEYS, view_type="NEW_AND_OLD_IMAGES", shards=2)
    rng = random.Random(7)

    def write(n: int) -> None:
        _write(server, "Drops", rng, n, keys=300)

    write(100)
    common = ["--endpoint-url", server.endpoint, "--region", "us-east-1", "--state-schema", state_schema]
    migrate = [PODYN, "migrate", "--postgres-url", dsn, *common, "--target-schema", target, "--no-progress"]
    assert subprocess.run(migrate, capture_output=True, text=True, timeout=120, check=False).returncode == 0
    follow = [PODYN, "follow", "--postgres-url", _via(proxy, own_pg), *common, "--exit-when-idle", "5"]
    try:
        with running(follow) as proc:
            for kind in KINDS:
                for point in POINTS:
                    fired = proxy.arm(point, kind)
                    before = proc.stderr().count("reconnected to PostgreSQL")
                    write(50)
                    proc.wait_for(fired.is_set, f"a change applied through {point} ({kind})")
                    proc.wait_for(
                        lambda before=before: proc.stderr().count("reconnected to PostgreSQL") > before,  # type: ignore[misc]
                        f"reconnected after a {kind} drop at {point}",
                    )
            write(50)
            assert proc.finish(timeout=120) == 0, proc.stderr()
            stderr = proc.stderr()
    finally:
        proxy.close()
    assert stderr.count("reconnected to PostgreSQL") == len(POINTS) * len(KINDS), stderr
    # Each silent drop is noticed by asking the server, and every old session is ended.
    assert stderr.count("dropping the connection") == len(POINTS), stderr
    assert stderr.count("ending the previous session") == len(POINTS) * len(KINDS), stderr
    assert "Traceback" not in stderr, stderr
    _follow_exact(dsn, state_schema, target, server, "Drops")


def test_a_loader_starting_while_postgres_is_down_waits_for_it(
    own_pg: EmbeddedPostgres, caplog: pytest.LogCaptureFixture
) -> None:
    # A loader process spawned while the server restarts must wait for it, not fail the whole
    # migrate (found by running the restart test 20 times in a row: a worker started in the window).
    restarting = threading.Thread(target=own_pg.restart, kwargs={"down_seconds": 3})
    restarting.start()
    try:
        deadline = time.monotonic() + 30
        while True:  # until the server refuses connections
            try:
                psycopg.connect(own_pg.dsn, connect_timeout=2).close()
            except psycopg.OperationalError:
                break
            assert time.monotonic() < deadline, "the server never went down"
            time.sleep(0.01)
        with pytest.raises(psycopg.OperationalError):
            connect.connect(own_pg.dsn, "podyn-fast test")  # a command's first connection: at once
        with caplog.at_level(logging.WARNING, logger="podyn_fast"):
            conn = connect.connect_patiently(own_pg.dsn, "podyn-fast test")
        with conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert "cannot connect to PostgreSQL" in caplog.text and "connected to PostgreSQL" in caplog.text
    finally:
        restarting.join()
