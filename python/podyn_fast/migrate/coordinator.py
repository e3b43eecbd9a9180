"""`migrate`'s coordinator: plan the tables, run the loader processes, build indexes, report.

The coordinator holds no state of its own: tables, columns and segment positions are in the state
schema, so the same command run again (or on another host, at the same time) picks up where any
earlier run stopped.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from typing import Any

import psycopg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from podyn_fast import malloc, state
from podyn_fast.dynamo import client
from podyn_fast.dynamo.client import RawDynamo
from podyn_fast.dynamo.tables import SourceTable, describe, list_tables
from podyn_fast.errors import Interrupted, MigrateError
from podyn_fast.migrate import snapshot
from podyn_fast.migrate.plan import finish, plan
from podyn_fast.migrate.worker import STOP, init_process, w_load, w_ready
from podyn_fast.postgres import connect
from podyn_fast.settings import MigrateConfig

log = logging.getLogger("podyn_fast")
APPLICATION = "podyn-fast migrate"


@dataclasses.dataclass
class TableReport:
    """The outcome of one table."""

    name: str
    items: int
    loaded_now: int
    """Items this run committed (the rest were loaded by an earlier run)."""
    rejects: int
    nbytes: int
    seconds: float
    loaded: bool


# Seconds a worker process has to die after SIGTERM before it is killed.
STOP_GRACE = 5.0
_STOPPING = (signal.SIGINT, signal.SIGTERM)


def make_executor(workers: int, *, json_logs: bool = False, fork: bool = False) -> Executor:
    """The loaders: one in a thread of this process (simpler to debug), or one process each.

    Processes are forked when ``fork`` says this process holds nothing a child must not inherit
    (no botocore client, no PostgreSQL connection) and runs no other thread: a forked worker starts
    with every module already imported, where a spawned one spends about half a CPU-second
    importing botocore and psycopg again. Otherwise they are spawned (botocore clients, psycopg
    connections and threads do not survive fork). Either way they all start at once, so their
    start-up overlaps what this process does meanwhile.
    """
    if workers == 1:
        return ThreadPoolExecutor(1, thread_name_prefix="loader")
    forkable = fork and threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods()
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("fork" if forkable else "spawn"),
        initializer=init_process,
        initargs=(os.getpid(), json_logs),
    )
    # A fork pool starts every process at its first task; a spawn pool one per task while none
    # is idle: one task each starts them all.
    for _ in range(workers):
        pool.submit(w_ready)
    return pool


def run(
    cfg: MigrateConfig,
    console: Console | None = None,
    on_planned: Callable[[list[str]], None] | None = None,
    failed: Callable[[], BaseException | None] = lambda: None,
) -> list[TableReport]:
    """Load every table of ``cfg``; returns one report per table. ``on_planned`` is called with the
    table names once they are recorded and created, before any row is loaded (``--follow`` starts
    capturing changes there). ``failed`` is asked every moment of the load: an error it returns
    (the follower capturing the changes has stopped) stops the load at once and is raised."""
    console = console or Console(stderr=True)
    # Before the fork, so that the workers inherit them: malloc's settings, and botocore's data.
    malloc.keep_freed_memory()
    pool = None
    if cfg.load:
        exports = ("s3",) if cfg.export or cfg.export_to else ()
        client.warm(cfg.aws.profile, ("dynamodb", "dynamodbstreams", *exports))
        # First, while this process holds no client and no connection: the workers can be forked.
        pool = make_executor(max(1, cfg.workers), json_logs=cfg.json_logs, fork=True)
    try:
        return _run(cfg, console, pool, on_planned, failed)
    finally:
        if pool is not None:  # shut down by _load unless nothing was loaded or planning failed
            pool.shutdown(wait=True, cancel_futures=True)


def _run(
    cfg: MigrateConfig,
    console: Console,
    pool: Executor | None,
    on_planned: Callable[[list[str]], None] | None,
    failed: Callable[[], BaseException | None],
) -> list[TableReport]:
    dynamo = RawDynamo.of(cfg.aws)
    cfg, export = snapshot.resolve(cfg, dynamo, console)
    names = [export.table_name] if export else list(cfg.tables) or list_tables(dynamo)
    if not names:
        raise MigrateError("no DynamoDB tables to migrate (ListTables returned none)")
    conn = connect.connect(cfg.postgres_url, APPLICATION)
    try:
        state.ensure_schema(conn, cfg.state_schema)
        # Every table is described before any is created: a missing one stops the run untouched.
        sources = [describe(dynamo, name) for name in names]
        if export is not None:
            sources = [snapshot.from_export(cfg, sources[0], export)]
        tables = {src.name: plan(conn, cfg, src) for src in sources}
        if not cfg.load:
            return [_report(conn, cfg, name, 0, 0.0, loaded=t.phase != "loading") for name, t in tables.items()]
        for src in sources:
            if tables[src.name].phase == "loading":
                # From here on, every change must reach the follower: the stream that records them.
                since = src.export.export_time - snapshot.EXPORT_FUZZ if src.export else None
                state.mark_load_start(conn, cfg.state_schema, src.name, src.stream_arn, at=since)
        if on_planned is not None:
            on_planned(list(tables))
        before = {name: state.progress(conn, cfg.state_schema, name).items for name in tables}
        started = time.monotonic()
        todo = {src.name: _Planned.of(src) for src in sources if tables[src.name].phase == "loading"}
        while todo:
            _load(cfg, todo, console, failed, pool or make_executor(max(1, cfg.workers), json_logs=cfg.json_logs))
            pool = None  # shut down by _load
            # Idle through the load: PostgreSQL may have restarted meanwhile (the workers rode it out).
            conn = connect.usable(conn, cfg.postgres_url, APPLICATION)
            if not _wait_for_others(conn, cfg, list(todo), console):
                break
        seconds = time.monotonic() - started
        reports = []
        for name, table in tables.items():
            p = state.progress(conn, cfg.state_schema, name)
            loaded = table.phase != "loading"
            if not loaded and p.segments_done == p.total_segments:
                finish(conn, cfg, table)
                loaded = True
            reports.append(_report(conn, cfg, name, before[name], seconds, loaded=loaded))
    finally:
        conn.close()
    return reports


def _wait_for_others(conn: psycopg.Connection[Any], cfg: MigrateConfig, tables: list[str], console: Console) -> bool:
    """Once our workers find nothing left to claim, wait while other migrate processes finish the
    segments they hold. True when some became ours to load (a holder died, or its lease ran
    out): load again; False when every segment is done."""
    told = False
    while True:
        left, held = state.held_elsewhere(conn, cfg.state_schema, tables)
        if left == 0:
            return False
        if held < left:
            return True
        if not told:
            console.print(f"waiting for {held} segment(s) that other migrate processes are loading")
            told = True
        time.sleep(0.5)


def _report(
    conn: psycopg.Connection[Any], cfg: MigrateConfig, name: str, before: int, seconds: float, *, loaded: bool
) -> TableReport:
    p = state.progress(conn, cfg.state_schema, name)
    return TableReport(name, p.items, p.items - before, p.rejects, p.bytes, seconds, loaded)


@dataclasses.dataclass(frozen=True)
class _Planned:
    """What the progress of a table being loaded is measured against."""

    items: int
    """The item count DescribeTable (refreshed every ~6 hours) or the export's manifest gives."""
    unit: str
    """What its segments are: "segments" of a Scan, data "files" of an export."""

    @classmethod
    def of(cls, source: SourceTable) -> _Planned:
        return cls(source.item_count, "files" if source.export else "segments")


def _load(
    cfg: MigrateConfig,
    planned: dict[str, _Planned],
    console: Console,
    failed: Callable[[], BaseException | None],
    pool: Executor,
) -> None:
    """Load ``planned`` with ``pool``'s workers, and shut the pool down."""
    workers = max(1, cfg.workers)
    console.print(f"loading {len(planned)} table(s) with {workers} worker(s), one PostgreSQL connection each")
    signalled: list[int] = []

    def failed_or_signalled() -> BaseException | None:
        return Interrupted(signalled[0]) if signalled else failed()

    # While the workers run, Ctrl-C and SIGTERM only say so: the progress loop acts on them at
    # its next tick. An exception raised at any point of the pool's own code (holding one of its
    # locks) could leave the pool unable to shut down.
    previous = {sig: signal.signal(sig, lambda signum, _: signalled.append(signum)) for sig in _STOPPING}
    try:
        futures = [pool.submit(w_load, cfg, list(planned)) for _ in range(workers)]
        _watch(cfg, planned, futures, console, failed_or_signalled)
    except BaseException:  # a signal, or this process failing: the workers stop too
        _stop_workers(pool)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    pool.shutdown(wait=True)
    if signalled:  # after the progress loop's last look
        raise Interrupted(signalled[0])
    for f in futures:
        f.result()  # raises the first worker's error


def _stop_workers(pool: Executor) -> None:
    """Stop the loaders at once: each abandons its transaction in flight (PostgreSQL rolls it
    back), so what is committed stays exactly what the state schema says; a rerun resumes. A
    worker process still alive STOP_GRACE seconds after SIGTERM is killed; the pool is shut down
    once they are all dead (a thread worker stops at its next page)."""
    STOP.set()
    if isinstance(pool, ProcessPoolExecutor):
        processes = list(getattr(pool, "_processes", {}).values())  # no public way before Python 3.14
        for process in processes:
            process.terminate()
        deadline = time.monotonic() + STOP_GRACE
        for process in processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
    pool.shutdown(wait=True, cancel_futures=True)


class _ProgressReader:
    """The coordinator's reads of the state schema during the load, over a connection of its own
    that rides out a PostgreSQL restart (the workers reconnect on their own too)."""

    def __init__(self, cfg: MigrateConfig) -> None:
        self.cfg = cfg
        self.conn = connect.connect_patiently(cfg.postgres_url, APPLICATION)

    def read(self, names: Iterable[str]) -> dict[str, state.Progress]:
        while True:
            try:
                return {n: state.progress(self.conn, self.cfg.state_schema, n) for n in names}
            except psycopg.OperationalError as e:
                self.conn = connect.recover(self.conn, e, self.cfg.postgres_url, APPLICATION)

    def __enter__(self) -> _ProgressReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.conn.close()


def _watch(
    cfg: MigrateConfig,
    planned: dict[str, _Planned],
    futures: list[Future[Any]],
    console: Console,
    failed: Callable[[], BaseException | None],
) -> None:
    """Show committed progress per table until the workers are done (read from the state schema,
    so it counts the work of every host): items, segments (an export's data files) done, MB and
    rate. Totals start from DescribeTable's ItemCount, or the export manifest's.

    Bars on a terminal; elsewhere (a pipe, a log file) a plain line per table every
    ``progress_every`` seconds, and with JSON logs a progress record instead.
    """
    live = cfg.progress and console.is_terminal
    plain = cfg.progress and not console.is_terminal
    with (
        _ProgressReader(cfg) as reader,
        Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[units]}  {task.fields[mb]:.1f} MB  {task.fields[rate]:.1f} MB/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not live,
            transient=False,
        ) as bar,
    ):
        tasks = {n: bar.add_task(n, total=e.items or None, units="", mb=0.0, rate=0.0) for n, e in planned.items()}
        first = {n: p.bytes for n, p in reader.read(planned).items()}
        started = last_line = time.monotonic()
        while True:
            if (error := failed()) is not None:
                raise error
            finished = all(f.done() for f in futures)
            line_due = time.monotonic() - last_line >= cfg.progress_every
            progress = reader.read(planned)
            for n, expected in planned.items():
                p = progress[n]
                total = bar.tasks[tasks[n]].total
                if p.segments_done == p.total_segments or (total is not None and p.items > total):
                    total = p.items  # DescribeTable's ItemCount is refreshed every ~6 hours: trust the count
                elapsed = max(time.monotonic() - started, 1e-3)
                rate = (p.bytes - first[n]) / 1e6 / elapsed
                units = f"{p.segments_done:,}/{p.total_segments:,} {expected.unit}"
                bar.update(tasks[n], completed=p.items, total=total, units=units, mb=p.bytes / 1e6, rate=rate)
                if line_due and not finished:
                    eta = bar.tasks[tasks[n]].time_remaining
                    _progress_line(console, n, p, expected.unit, total, rate, eta, plain=plain, json=cfg.json_logs)
            if line_due:
                last_line = time.monotonic()
            if finished:
                return
            # Back as soon as the workers are done (or one failed), not at the next tick.
            wait(futures, timeout=min(0.5, cfg.progress_every), return_when=FIRST_EXCEPTION)


def _progress_line(
    console: Console,
    name: str,
    p: state.Progress,
    unit: str,
    total: float | None,
    rate: float,
    eta: float | None,
    *,
    plain: bool,
    json: bool,
) -> None:
    of = f" of ~{int(total):,}" if total else ""
    share = f" ({100 * p.items / total:.0f}%)" if total else ""
    remaining = f", {int(eta) // 60}m{int(eta) % 60:02d}s left" if eta is not None else ""
    units = f"{p.segments_done:,} of {p.total_segments:,} {unit}"
    text = f"{name}: {p.items:,}{of} items{share}, {units}, {p.bytes / 1e6:,.1f} MB, {rate:.1f} MB/s{remaining}"
    if json:
        fields = {
            "table": name,
            "items": p.items,
            "total": total,
            unit: p.segments_done,
            f"total_{unit}": p.total_segments,
            "mb": p.bytes / 1e6,
            "mb_per_s": rate,
            "eta_seconds": eta,
        }
        log.info("%s", text, extra={"fields": fields})
    elif plain:
        console.print(text, highlight=False, soft_wrap=True)
