"""follow benchmark: the apply rate on a backlog, the lag at a steady write rate, and the requests
an idle shard costs.

    .venv/bin/python -m benches.follow [--backlog 200000] [--shards 4] [--rate 500] [--seconds 20]
        [--idle-shards 1000] [--idle-seconds 60] [--dsn DSN]

Changes (typical items: 60% new, 25% put over an existing one, 15% deletes) come from the Streams
test server (tests/servers/streams.py) in this process; `podyn-fast follow` runs as a subprocess.
Lag is measured end to end: every write carries its wall-clock time, and every 50 ms a poller reads
the newest one visible in PostgreSQL; a sample is how much older it is than the newest write made
(so that a pause of this process, which writes the changes and serves the stream, does not count
as the follower's). Each phase ends with PostgreSQL compared to the server's
table, row by row. The idle phase counts the GetRecords requests of a table of quiet shards
followed beside the busy one.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg import sql

from benches import machine, procs
from podyn_fast import state
from tests import reference
from tests.servers.scan import typical_item
from tests.servers.streams import StreamsServer

TABLE = "bench"
QUIET = "quiet"
EXE = str(Path(sys.executable).parent / "podyn-fast")


class Writer:
    """Changes as an application makes them: new items (``typical_item``s), puts over existing
    items and deletes, 60/25/15, each item stamped with its write's wall-clock time (``t``). Keys
    are drawn over every live item, so a transaction's changes rarely share a key: the collapse
    per key saves little, as in a real backlog."""

    def __init__(self, server: StreamsServer, rng: random.Random) -> None:
        self.server, self.rng = server, rng
        self.live: list[int] = []
        self.made = 0
        self.last_t = 0.0
        """The write time stamped on the newest write."""
        self.longest_pause = 0.0
        """The longest time between two writes of the lag phase: a lag sample is the follower's only
        while the writes it waits for were made on time."""

    def write(self, changes: int) -> None:
        for _ in range(changes):
            roll = self.rng.random()
            if roll < 0.25 and self.live:
                self.server.put(TABLE, self._item(self.live[self.rng.randrange(len(self.live))]))
            elif roll < 0.4 and self.live:
                at = self.rng.randrange(len(self.live))
                item = self._item(self.live[at])
                self.live[at] = self.live[-1]
                self.live.pop()
                self.server.delete(TABLE, {"pk": item["pk"], "sk": item["sk"]})
            else:
                self.live.append(self.made)
                self.server.put(TABLE, self._item(self.made))
                self.made += 1

    def _item(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = orjson.loads(typical_item(i))
        self.last_t = time.time()
        item["t"] = {"N": repr(self.last_t)}
        return item


@dataclass(frozen=True)
class Setup:
    """Where the benchmark's commands run: PostgreSQL (and its postmaster, for its CPU), the
    Streams server, the target and state schemas, and the environment."""

    pg: machine.Postgres
    server: StreamsServer
    schemas: tuple[str, str]
    env: dict[str, str]

    def cmd(self, command: str, *args: str) -> list[str]:
        cmd = [EXE, command, "--postgres-url", self.pg.dsn, "--endpoint-url", self.server.endpoint]
        cmd += ["--region", "us-east-1", "--state-schema", self.schemas[1], *args]
        if command == "migrate":
            cmd += ["--target-schema", self.schemas[0], "--no-progress"]
        return cmd

    def run(self, command: str, *args: str) -> None:
        subprocess.run(self.cmd(command, *args), env=self.env, check=True, capture_output=True)

    def start(self, command: str) -> subprocess.Popen[bytes]:
        """``command`` running; what it logs goes to this process's stderr (a warning there, a
        retried read say, explains a lag)."""
        return subprocess.Popen(self.cmd(command), env=self.env, stdout=subprocess.DEVNULL)


def _check(setup: Setup) -> bool:
    schemas, server = setup.schemas, setup.server
    with psycopg.connect(setup.pg.dsn, autocommit=True) as conn:
        table = state.get_table(conn, schemas[1], TABLE)
        assert table is not None
        try:
            reference.check_table(
                conn, schemas[0], TABLE, state.layout(conn, schemas[1], table), server.snapshot(TABLE).values()
            )
        except AssertionError:
            return False
    return True


def _lag(setup: Setup, writer: Writer, rate: float, seconds: float) -> list[float]:
    """Write at ``rate`` for ``seconds`` under a running follower; sample the lag every 50 ms."""
    dsn, schemas = setup.pg.dsn, setup.schemas
    follower = setup.start("follow")
    samples: list[float] = []
    stop = threading.Event()

    def poll() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            query = sql.SQL("SELECT max(t) FROM {}.{}").format(sql.Identifier(schemas[0]), sql.Identifier(TABLE))
            while not stop.is_set():
                newest = writer.last_t
                row = conn.execute(query).fetchone()
                if row and row[0] is not None:
                    # Rows of the backlog are older than the phase: until one of its writes shows,
                    # the lag is its age.
                    samples.append(max(0.0, newest - max(float(row[0]), began)))
                time.sleep(0.05)

    poller = threading.Thread(target=poll)
    time.sleep(2.0)  # the follower is up and idle
    began = time.time()
    poller.start()
    n = 0
    start = last = time.perf_counter()
    while time.perf_counter() - start < seconds:
        writer.write(1)
        writer.longest_pause = max(writer.longest_pause, time.perf_counter() - last)
        last = time.perf_counter()
        n += 1
        time.sleep(max(0.0, start + n / rate - time.perf_counter()))
    time.sleep(3.0)
    stop.set()
    poller.join()
    follower.send_signal(2)  # SIGINT: finish the batch, commit, exit 0
    follower.wait(timeout=60)
    return samples


def _catch_up(setup: Setup) -> tuple[float, float, float | None]:
    """One follow run from start to idle: (seconds, its CPU-seconds, PostgreSQL's or None)."""
    pg = setup.pg
    pg_before = procs.cpu_seconds_with_reaped_children(pg.postmaster) if pg.postmaster else None
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    setup.run("follow", "--exit-when-idle", "1")
    seconds = time.perf_counter() - t0 - 1.0  # minus the idle second that ends the run
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    time.sleep(0.3)  # the backends' CPU reaches the postmaster's counters once they exit
    pg_after = procs.cpu_seconds_with_reaped_children(pg.postmaster) if pg.postmaster else None
    follower_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    pg_cpu = pg_after - pg_before if pg_before is not None and pg_after is not None else None
    return seconds, follower_cpu, pg_cpu


def _idle_requests(setup: Setup, shards: int, seconds: float) -> float:
    """GetRecords requests per idle shard per minute: a table of ``shards`` quiet shards, loaded
    and followed (beside the busy one), counted over ``seconds`` once its shards have been read
    and their polling has settled."""
    server = setup.server
    server.create_table(QUIET, (("pk", "S"), ("sk", "N")), view_type="NEW_AND_OLD_IMAGES", shards=shards)
    for i in range(1000):
        server.put(QUIET, orjson.loads(typical_item(i)))
    setup.run("migrate", "--table", QUIET)
    follower = setup.start("follow")
    try:
        time.sleep(30.0)  # every shard read to its head, the backoff at its cap
        before = server.stats(QUIET).requests
        time.sleep(seconds)
        requests = server.stats(QUIET).requests - before
    finally:
        follower.send_signal(2)
        follower.wait(timeout=60)
    return requests / shards / (seconds / 60)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backlog", type=int, default=200_000, help="changes written before follow starts")
    ap.add_argument("--shards", type=int, default=4, help="shards of the table's stream")
    ap.add_argument("--rate", type=float, default=500.0, help="steady writes per second for the lag phase")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the lag phase")
    ap.add_argument("--idle-shards", type=int, default=1000, help="shards of a quiet table (0: no idle phase)")
    ap.add_argument("--idle-seconds", type=float, default=60.0, help="how long its requests are counted")
    ap.add_argument("--dsn", default=os.environ.get("PODYN_TEST_DSN"))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)

    server = StreamsServer()
    server.start()
    server.create_table(TABLE, (("pk", "S"), ("sk", "N")), view_type="NEW_AND_OLD_IMAGES", shards=args.shards)
    writer = Writer(server, random.Random(7))
    writer.write(1000)
    tag = uuid.uuid4().hex[:8]
    schemas = (f"fb_{tag}", f"fb_{tag}_state")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    with machine.postgres(args.dsn) as pg:
        setup = Setup(pg, server, schemas, env)
        try:
            setup.run("migrate", "--table", TABLE)
            # 1. Apply rate: a backlog, applied by one follow run from start to idle.
            writer.write(args.backlog)
            backlog_seconds, follower_cpu, pg_cpu = _catch_up(setup)
            backlog_ok = _check(setup)
            # 2. Lag at a steady rate; 3. the requests of idle shards.
            samples = _lag(setup, writer, args.rate, args.seconds)
            lag_ok = _check(setup)
            idle = _idle_requests(setup, args.idle_shards, args.idle_seconds) if args.idle_shards else None
        finally:
            server.stop()
            with psycopg.connect(pg.dsn, autocommit=True) as conn:
                for s in schemas:
                    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(s)))
        pg_version = pg.version

    # Samples while writes ran (the first second is the follower noticing the first write).
    steady = sorted(samples[20 : max(20, len(samples) - 60)]) or sorted(samples)
    p50 = statistics.median(steady)
    p99 = steady[min(len(steady) - 1, int(len(steady) * 0.99))]
    result = {
        "backlog_changes": args.backlog,
        "shards": args.shards,
        "backlog_seconds": backlog_seconds,
        "apply_rate": args.backlog / backlog_seconds,
        "follower_cpu_seconds_per_100k": follower_cpu * 100_000 / args.backlog,
        "postgres_cpu_seconds_per_100k": pg_cpu * 100_000 / args.backlog if pg_cpu is not None else None,
        "steady_rate": args.rate,
        "lag_p50_seconds": p50,
        "lag_p99_seconds": p99,
        "lag_samples": len(steady),
        "writer_longest_pause_seconds": writer.longest_pause,
        "idle_shards": args.idle_shards,
        "requests_per_idle_shard_per_minute": idle,
        "correct": backlog_ok and lag_ok,
    }
    pg_per_100k, rate = _cpu(result["postgres_cpu_seconds_per_100k"]), result["apply_rate"]
    lines = [
        f"machine: {machine.describe(pg_version)}",
        f"command: .venv/bin/python -m benches.follow {' '.join(argv if argv is not None else sys.argv[1:])}",
        "",
        "| measure | value |",
        "|---|---|",
        f"| apply rate, {args.backlog:,} changes of backlog ({args.shards} shards) | {rate:,.0f} changes/s |",
        f"| follower CPU-s per 100,000 changes of the backlog | {result['follower_cpu_seconds_per_100k']:.2f} |",
        f"| PostgreSQL CPU-s per 100,000 changes of the backlog | {pg_per_100k} |",
        f"| lag p50 at {args.rate:,.0f} writes/s | {p50 * 1000:,.0f} ms |",
        f"| lag p99 at {args.rate:,.0f} writes/s | {p99 * 1000:,.0f} ms |",
        f"| longest pause between two writes of the source meanwhile | {writer.longest_pause * 1000:,.0f} ms |",
        *([] if idle is None else [f"| GetRecords per idle shard per minute ({args.idle_shards:,}) | {idle:.1f} |"]),
        f"| PostgreSQL equals the source after each phase | {result['correct']} |",
    ]
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "follow.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "follow.md").write_text("# follow benchmark\n\n" + "\n".join(lines) + "\n")
    return 0 if result["correct"] else 1


def _cpu(seconds: float | None) -> str:
    return f"{seconds:.2f}" if seconds is not None else "n/a (a server of the user's)"


if __name__ == "__main__":
    sys.exit(main())
