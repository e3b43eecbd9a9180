"""PostgreSQL restarted under a load and under a follower, on a server of this module's own.

migrate and follow both reconnect with backoff and carry on from what was committed, in the same
process, ending exact.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import psycopg
import pytest

from podyn_fast import state
from podyn_fast.embedded.postgres import EmbeddedPostgres
from tests import reference
from tests.fix_pg import applied_records, committed_items
from tests.fix_scan_server import TYPICAL, TYPICAL_COUNT
from tests.moto_migrate import PODYN
from tests.servers.scan import ScanServer, typical_item
from tests.servers.streams import StreamsServer

KEYS = [("pk", "S"), ("sk", "N")]


@pytest.fixture(scope="module")
def own_pg() -> Iterator[EmbeddedPostgres]:
    with EmbeddedPostgres() as server:
        yield server


def _wait_until(predicate: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_migrate_rides_out_a_restart(own_pg: EmbeddedPostgres, fast_dynamo: ScanServer) -> None:
    dsn = own_pg.dsn
    tag = uuid.uuid4().hex[:8]
    target, state_schema = f"p_{tag}", f"p_{tag}_state"
    cmd = [
        PODYN, "migrate", "--postgres-url", dsn, "--endpoint-url", fast_dynamo.endpoint, "--region", "us-east-1",
        "--table", TYPICAL, "--batch-mb", "1", "--segments", "8", "--target-schema", target,
        "--state-schema", state_schema, "--no-progress",
    ]  # fmt: skip
    fast_dynamo.latency = 0.02
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_until(lambda: committed_items(dsn, state_schema, TYPICAL) > 0 or proc.poll() is not None)
        assert proc.poll() is None, "finished before the restart"
        own_pg.restart(down_seconds=2)
        _, stderr = proc.communicate(timeout=120)
    finally:
        fast_dynamo.latency = 0.0
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # The loaders and the coordinator reconnect with backoff and finish the load themselves.
    assert proc.returncode == 0, stderr
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
        for _ in range(n):
            key = rng.randrange(600)
            if rng.random() < 0.2:
                server.delete("Tbl", {"pk": {"S": f"k{key}"}, "sk": {"N": "0"}})
            else:
                server.put("Tbl", {"pk": {"S": f"k{key}"}, "sk": {"N": "0"}, "v": {"N": str(rng.randrange(10**6))}})

    write(3000)
    server.latency = 0.01  # slow enough that the restart lands while changes are applied
    follow = [PODYN, "follow", *common, "--exit-when-idle", "3"]
    proc = subprocess.Popen(follow, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_until(lambda: applied_records(dsn, state_schema) > 0 or proc.poll() is not None)
        assert proc.poll() is None, "finished before the restart"
        writer = threading.Thread(target=write, args=(2000,))
        writer.start()  # changes keep coming while PostgreSQL is down
        own_pg.restart(down_seconds=3)
        writer.join()
        _, stderr = proc.communicate(timeout=180)
    finally:
        server.latency = 0.0
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert "reconnected to PostgreSQL" in stderr, stderr
    with psycopg.connect(dsn, autocommit=True) as conn:
        found = state.get_table(conn, state_schema, "Tbl")
        assert found is not None
        layout = state.layout(conn, state_schema, found)
        reference.check_table(conn, target, found.target_table, layout, list(server.snapshot("Tbl").values()))


class DroppingProxy:
    """A TCP proxy to PostgreSQL that can drop its clients' side of every connection while keeping
    the server's side open: the client sees a dead network, the server a live, idle session."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.kept: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            self.pairs.append((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)

    def drop(self) -> None:
        """Reset every client connection; the server sockets stay open (and silent)."""
        pairs, self.pairs = self.pairs, []
        for client, server in pairs:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            self.kept.append(server)

    def close(self) -> None:
        self.listener.close()
        for s in self.kept:
            s.close()


def test_follow_ends_the_session_a_network_drop_left_behind(
    own_pg: EmbeddedPostgres, streams_server: StreamsServer
) -> None:
    # The follower's table lock lives in its session: after a drop that the server does not see,
    # the reconnected follower must end its old session, or wait hours for TCP to notice.
    proxy = DroppingProxy(own_pg.port)
    dsn = own_pg.dsn
    via_proxy = dsn.replace(f":{own_pg.port}/", f":{proxy.port}/")
    tag = uuid.uuid4().hex[:8]
    target, state_schema = f"n_{tag}", f"n_{tag}_state"
    server = streams_server
    server.create_table("Net", KEYS, view_type="NEW_AND_OLD_IMAGES", shards=2)
    for i in range(100):
        server.put("Net", {"pk": {"S": f"k{i}"}, "sk": {"N": "0"}, "v": {"N": str(i)}})
    common = ["--endpoint-url", server.endpoint, "--region", "us-east-1", "--state-schema", state_schema]
    migrate = [PODYN, "migrate", "--postgres-url", dsn, *common, "--target-schema", target, "--no-progress"]
    assert subprocess.run(migrate, capture_output=True, text=True, timeout=120, check=False).returncode == 0
    follow = [PODYN, "follow", "--postgres-url", via_proxy, *common, "--exit-when-idle", "3"]
    proc = subprocess.Popen(follow, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for i in range(200):
            server.put("Net", {"pk": {"S": f"k{i}"}, "sk": {"N": "1"}, "v": {"N": str(i)}})

        _wait_until(lambda: applied_records(dsn, state_schema) > 0 or proc.poll() is not None)
        assert proc.poll() is None, "finished before the drop"
        proxy.drop()
        for i in range(200):
            server.put("Net", {"pk": {"S": f"k{i}"}, "sk": {"N": "2"}, "v": {"N": str(i)}})
        _, stderr = proc.communicate(timeout=120)
    finally:
        proxy.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert "ending the previous session" in stderr and "reconnected to PostgreSQL" in stderr, stderr
    with psycopg.connect(dsn, autocommit=True) as conn:
        found = state.get_table(conn, state_schema, "Net")
        assert found is not None
        layout = state.layout(conn, state_schema, found)
        reference.check_table(conn, target, found.target_table, layout, list(server.snapshot("Net").values()))
