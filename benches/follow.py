"""follow benchmark: the apply rate on a backlog, and the lag at a steady write rate.

    .venv/bin/python -m benches.follow [--backlog 200000] [--shards 4] [--rate 500] [--seconds 20] [--dsn DSN]

Changes come from the Streams test server (tests/servers/streams.py) in this process;
`podyn-fast follow` runs as a subprocess. Lag is measured end to end: every write carries its
wall-clock time, and a poller reads the newest one visible in PostgreSQL every 50 ms. Each phase
ends with PostgreSQL compared to the server's table, row by row.
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
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from benches import machine, procs
from podyn_fast import state
from tests import reference
from tests.servers.streams import StreamsServer

TABLE = "bench"
EXE = str(Path(sys.executable).parent / "podyn-fast")
KEYS = 20_000


def _item(rng: random.Random, i: int) -> dict[str, Any]:
    key = rng.randrange(KEYS)
    return {
        "pk": {"S": f"user#{key:06d}"},
        "sk": {"N": str(key % 7)},
        "t": {"N": repr(time.time())},
        "n": {"N": str(i)},
        "s": {"S": "x" * rng.randrange(10, 80)},
        "m": {"M": {"a": {"N": "1.5"}, "b": {"SS": ["p", "q"]}}},
    }


def _cmd(dsn: str, endpoint: str, schemas: tuple[str, str], command: str, *args: str) -> list[str]:
    cmd = [EXE, command, "--postgres-url", dsn, "--endpoint-url", endpoint, "--region", "us-east-1"]
    cmd += ["--state-schema", schemas[1], *args]
    if command == "migrate":
        cmd += ["--target-schema", schemas[0], "--no-progress"]
    return cmd


def _check(dsn: str, schemas: tuple[str, str], server: StreamsServer) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        table = state.get_table(conn, schemas[1], TABLE)
        assert table is not None
        try:
            reference.check_table(
                conn, schemas[0], TABLE, state.layout(conn, schemas[1], table), server.snapshot(TABLE).values()
            )
        except AssertionError:
            return False
    return True


def _lag(
    dsn: str,
    endpoint: str,
    schemas: tuple[str, str],
    env: dict[str, str],
    server: StreamsServer,
    rng: random.Random,
    rate: float,
    seconds: float,
) -> list[float]:
    """Write at ``rate`` for ``seconds`` under a running follower; sample the lag every 50 ms."""
    follower = subprocess.Popen(
        _cmd(dsn, endpoint, schemas, "follow"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    samples: list[float] = []
    stop = threading.Event()

    def poll() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            query = sql.SQL("SELECT max(t) FROM {}.{}").format(sql.Identifier(schemas[0]), sql.Identifier(TABLE))
            while not stop.is_set():
                row = conn.execute(query).fetchone()
                if row and row[0] is not None:
                    samples.append(time.time() - float(row[0]))
                time.sleep(0.05)

    poller = threading.Thread(target=poll)
    time.sleep(2.0)  # the follower is up and idle
    poller.start()
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        server.put(TABLE, _item(rng, n))
        n += 1
        time.sleep(max(0.0, start + n / rate - time.perf_counter()))
    time.sleep(3.0)
    stop.set()
    poller.join()
    follower.send_signal(2)  # SIGINT: finish the batch, commit, exit 0
    follower.wait(timeout=60)
    return samples


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backlog", type=int, default=200_000, help="changes written before follow starts")
    ap.add_argument("--shards", type=int, default=4, help="shards of the table's stream")
    ap.add_argument("--rate", type=float, default=500.0, help="steady writes per second for the lag phase")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the lag phase")
    ap.add_argument("--dsn", default=os.environ.get("PODYN_TEST_DSN"))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)

    rng = random.Random(7)
    server = StreamsServer()
    endpoint = server.start()
    server.create_table(TABLE, (("pk", "S"), ("sk", "N")), view_type="NEW_AND_OLD_IMAGES", shards=args.shards)
    for i in range(1000):
        server.put(TABLE, _item(rng, i))
    tag = uuid.uuid4().hex[:8]
    schemas = (f"fb_{tag}", f"fb_{tag}_state")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    with machine.postgres(args.dsn) as pg:
        try:
            subprocess.run(_cmd(pg.dsn, endpoint, schemas, "migrate", "--table", TABLE), env=env, check=True)
            # 1. Apply rate: a backlog, applied by one follow run from start to idle.
            for i in range(args.backlog):
                server.put(TABLE, _item(rng, i))
            pg_before = procs.cpu_seconds_with_reaped_children(pg.postmaster) if pg.postmaster else None
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            follow = _cmd(pg.dsn, endpoint, schemas, "follow", "--exit-when-idle", "1")
            subprocess.run(follow, env=env, check=True, capture_output=True)
            backlog_seconds = time.perf_counter() - t0 - 1.0  # minus the idle second that ends the run
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            time.sleep(0.3)  # the backends' CPU reaches the postmaster's counters once they exit
            pg_after = procs.cpu_seconds_with_reaped_children(pg.postmaster) if pg.postmaster else None
            follower_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            pg_cpu = pg_after - pg_before if pg_before is not None and pg_after is not None else None
            backlog_ok = _check(pg.dsn, schemas, server)

            samples = _lag(pg.dsn, endpoint, schemas, env, server, rng, args.rate, args.seconds)
            lag_ok = _check(pg.dsn, schemas, server)
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
