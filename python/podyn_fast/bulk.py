"""`migrate`: plan the tables, run the loader processes, build indexes, report.

The coordinator holds no state of its own: tables, columns and segment positions are in the state
schema, so the same command run again (or on another host, at the same time) picks up where any
earlier run stopped.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import psycopg
from botocore.exceptions import ClientError
from psycopg import sql
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from podyn_fast import schema, state
from podyn_fast._core import Layout, column_type
from podyn_fast.dynamo.raw import RawDynamo
from podyn_fast.errors import MigrateError
from podyn_fast.postgres import connect, ddl
from podyn_fast.settings import MigrateConfig
from podyn_fast.worker import init_process, w_load

log = logging.getLogger("podyn_fast")
APPLICATION = "podyn-fast migrate"


@dataclass
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


def make_executor(workers: int, *, json_logs: bool = False) -> Executor:
    """Worker processes (spawn: botocore clients, psycopg connections and Rust threads do not
    survive fork); one worker runs in a thread of this process, which is simpler to debug."""
    if workers == 1:
        return ThreadPoolExecutor(1, thread_name_prefix="loader")
    return ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=init_process,
        initargs=(os.getpid(), json_logs),
    )


def describe(dynamo: RawDynamo, name: str) -> schema.SourceTable:
    try:
        return schema.source_table(dynamo.client.describe_table(TableName=name)["Table"])
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            where = dynamo.client.meta.region_name
            raise MigrateError(f"DynamoDB table {name!r} not found (region {where})") from None
        raise


def wanted_state(cfg: MigrateConfig, source: schema.SourceTable) -> tuple[state.TableState, list[tuple[str, str, str]]]:
    """The state a first run records for ``source`` with these settings, and its first columns."""
    columns = schema.initial_columns(source, lower_case=cfg.lower_case)
    wanted = state.TableState(
        table_name=source.name,
        target_schema=cfg.target_schema,
        target_table=schema.target_table_name(source.name),
        mode=cfg.mode,
        lower_case=cfg.lower_case,
        keys=source.keys,
        indexes=source.indexes,
        total_segments=cfg.segments or schema.default_segments(source, cfg.workers),
        deferred_primary_key=cfg.defer_primary_key,
        phase="loading",
        document_column=schema.document_column(columns) if cfg.mode == "jsonb" else None,
    )
    return wanted, columns


def index_statements(table: state.TableState, layout: Layout) -> list[sql.Composed]:
    """``CREATE INDEX`` for each secondary index, on the columns of its key attributes."""
    by_attr = {(a, t): c for a, t, c in layout.columns}
    return [
        ddl.create_index(
            table.target_schema,
            table.target_table,
            schema.index_name(table.target_table, index),
            [by_attr[(a, column_type(t) or "text")] for a, t in attrs],
        )
        for index, attrs in table.indexes
    ]


def plan(conn: psycopg.Connection[Any], cfg: MigrateConfig, source: schema.SourceTable) -> state.TableState:
    """Describe the table, record it in the state schema (first run only) and create its target
    table. A rerun with other settings than the first is refused rather than mixed."""
    name = source.name
    wanted, columns = wanted_state(cfg, source)
    recorded = state.register_table(
        conn, cfg.state_schema, wanted, columns, item_count=source.item_count, size_bytes=source.size_bytes
    )
    for attr, mine, theirs in (
        ("mode", wanted.mode, recorded.mode),
        ("lower_case", wanted.lower_case, recorded.lower_case),
        ("target_schema", wanted.target_schema, recorded.target_schema),
        ("keys", wanted.keys, recorded.keys),
    ):
        if mine != theirs:
            raise MigrateError(
                f"table {name!r} was first migrated with {attr}={theirs!r}, this run asks for {mine!r}: "
                f"run with the same settings to resume, or drop the target table and delete its rows from "
                f"{cfg.state_schema}.tables to start over"
            )
    if cfg.segments is not None and cfg.segments != recorded.total_segments:
        raise MigrateError(
            f"table {name!r} is being loaded with {recorded.total_segments} segments (fixed at its first run); "
            f"drop --segments or set it to {recorded.total_segments}"
        )
    layout = state.layout(conn, cfg.state_schema, recorded)
    with conn.transaction():
        state.setup_lock(conn)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(recorded.target_schema)))
        target = sql.Identifier(recorded.target_schema, recorded.target_table).as_string(conn)
        existed = conn.execute("SELECT to_regclass(%s)", [target]).fetchone() != (None,)
        conn.execute(
            ddl.create_table(
                recorded.target_schema, recorded.target_table, layout, primary_key=not recorded.deferred_primary_key
            )
        )
        if existed:
            _check_compatible(conn, recorded, layout)
        if cfg.citus and not existed:
            # In the transaction that creates it: a table is never left created but not distributed.
            conn.execute(ddl.distribute(recorded.target_schema, recorded.target_table, layout))
    return recorded


def _check_compatible(conn: psycopg.Connection[Any], table: state.TableState, layout: Layout) -> None:
    """A target table that exists already must have every column of the layout, of its type: else
    it is someone else's table (or from another tool), and loading into it would fail or mix data."""
    found = dict(
        conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            [sql.Identifier(table.target_schema, table.target_table).as_string(conn)],
        ).fetchall()
    )
    wanted = [(c, t) for _, t, c in layout.columns] + ([(layout.document, "jsonb")] if layout.document else [])
    for column, ty in wanted:
        if found.get(column) != ty:
            has = f"is {found[column]}" if column in found else "is missing"
            raise MigrateError(
                f"target table {table.target_schema}.{table.target_table} exists but does not fit DynamoDB table "
                f"{table.table_name!r}: column {column!r} {has}, {ty} expected; drop or rename it, or load into "
                f"another schema with --target-schema"
            )


def finish(conn: psycopg.Connection[Any], cfg: MigrateConfig, table: state.TableState) -> None:
    """After the last segment: the primary key if it was deferred, then the secondary indexes
    (built once over all rows, as pg_restore does), then the phase."""
    layout = state.layout(conn, cfg.state_schema, table)
    with conn.transaction():
        state.setup_lock(conn)
        if table.deferred_primary_key:
            has_pk = conn.execute(
                "SELECT 1 FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'p'",
                [sql.Identifier(table.target_schema, table.target_table).as_string(conn)],
            ).fetchone()
            if not has_pk:
                conn.execute(ddl.add_primary_key(table.target_schema, table.target_table, layout))
        for statement in index_statements(table, layout):
            conn.execute(statement)
    state.set_phase(conn, cfg.state_schema, table.table_name, "loaded")


def list_tables(dynamo: RawDynamo) -> list[str]:
    names: list[str] = []
    kwargs: dict[str, Any] = {}
    while True:
        page = dynamo.client.list_tables(**kwargs)
        names += page.get("TableNames", [])
        if "LastEvaluatedTableName" not in page:
            return names
        kwargs["ExclusiveStartTableName"] = page["LastEvaluatedTableName"]


def run(
    cfg: MigrateConfig, console: Console | None = None, on_planned: Callable[[list[str]], None] | None = None
) -> list[TableReport]:
    """Load every table of ``cfg``; returns one report per table. ``on_planned`` is called with the
    table names once they are recorded and created, before any row is loaded (``--follow`` starts
    capturing changes there)."""
    console = console or Console(stderr=True)
    dynamo = RawDynamo(region=cfg.aws.region, endpoint_url=cfg.aws.endpoint_url, profile=cfg.aws.profile)
    names = list(cfg.tables) or list_tables(dynamo)
    if not names:
        raise MigrateError("no DynamoDB tables to migrate (ListTables returned none)")
    conn = connect.connect(cfg.postgres_url, APPLICATION)
    try:
        state.ensure_schema(conn, cfg.state_schema)
        # Every table is described before any is created: a missing one stops the run untouched.
        sources = [describe(dynamo, name) for name in names]
        tables = {src.name: plan(conn, cfg, src) for src in sources}
        if not cfg.load:
            return [_report(conn, cfg, name, 0, 0.0, loaded=t.phase != "loading") for name, t in tables.items()]
        if on_planned is not None:
            on_planned(list(tables))
        before = {name: state.progress(conn, cfg.state_schema, name).items for name in tables}
        started = time.monotonic()
        todo = {src.name: src.item_count for src in sources if tables[src.name].phase == "loading"}
        while todo:
            _load(cfg, todo, console)
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


def _load(cfg: MigrateConfig, estimates: dict[str, int], console: Console) -> None:
    workers = max(1, cfg.workers)
    console.print(f"loading {len(estimates)} table(s) with {workers} worker(s), one PostgreSQL connection each")
    with make_executor(workers, json_logs=cfg.json_logs) as pool:
        futures = [pool.submit(w_load, cfg, list(estimates)) for _ in range(workers)]
        _watch(cfg, estimates, futures, console)
        for f in futures:
            f.result()  # raises the first worker's error


def _watch(
    cfg: MigrateConfig,
    estimates: dict[str, int],
    futures: list[Future[Any]],
    console: Console,
) -> None:
    """Show committed progress per table until the workers are done (read from the state schema,
    so it counts the work of every host). Totals start from DescribeTable's ItemCount.

    Bars on a terminal; elsewhere (a pipe, a log file) a plain line per table every
    ``progress_every`` seconds, and with JSON logs a progress record instead.
    """
    reader = _ProgressReader(cfg)
    try:
        _show_progress(reader, cfg, estimates, futures, console)
    finally:
        reader.close()


class _ProgressReader:
    """The coordinator's reads of the state schema during the load, over a connection of its own
    that rides out a PostgreSQL restart (the workers reconnect on their own too)."""

    def __init__(self, cfg: MigrateConfig) -> None:
        self.cfg = cfg
        self.conn = connect.connect(cfg.postgres_url, APPLICATION)

    def read(self, names: Iterable[str]) -> dict[str, state.Progress]:
        while True:
            try:
                return {n: state.progress(self.conn, self.cfg.state_schema, n) for n in names}
            except psycopg.OperationalError as e:
                self.conn = connect.recover(self.conn, e, self.cfg.postgres_url, APPLICATION)

    def close(self) -> None:
        self.conn.close()


def _show_progress(
    reader: _ProgressReader,
    cfg: MigrateConfig,
    estimates: dict[str, int],
    futures: list[Future[Any]],
    console: Console,
) -> None:
    live = cfg.progress and console.is_terminal
    plain = cfg.progress and not console.is_terminal
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[mb]:.1f} MB  {task.fields[rate]:.1f} MB/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not live,
        transient=False,
    ) as bar:
        tasks = {n: bar.add_task(n, total=estimate or None, mb=0.0, rate=0.0) for n, estimate in estimates.items()}
        first = {n: p.bytes for n, p in reader.read(estimates).items()}
        started = last_line = time.monotonic()
        while True:
            finished = all(f.done() for f in futures)
            line_due = time.monotonic() - last_line >= cfg.progress_every
            progress = reader.read(estimates)
            for n in estimates:
                p = progress[n]
                total = bar.tasks[tasks[n]].total
                if p.segments_done == p.total_segments or (total is not None and p.items > total):
                    total = p.items  # DescribeTable's ItemCount is refreshed every ~6 hours: trust the count
                elapsed = max(time.monotonic() - started, 1e-3)
                rate = (p.bytes - first[n]) / 1e6 / elapsed
                bar.update(tasks[n], completed=p.items, total=total, mb=p.bytes / 1e6, rate=rate)
                if line_due and not finished:
                    _progress_line(
                        console, n, p, total, rate, bar.tasks[tasks[n]].time_remaining, plain=plain, json=cfg.json_logs
                    )
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
    text = f"{name}: {p.items:,}{of} items{share}, {p.bytes / 1e6:,.1f} MB, {rate:.1f} MB/s{remaining}"
    if json:
        fields = {
            "table": name,
            "items": p.items,
            "total": total,
            "mb": p.bytes / 1e6,
            "mb_per_s": rate,
            "eta_seconds": eta,
        }
        log.info("%s", text, extra={"fields": fields})
    elif plain:
        console.print(text, highlight=False, soft_wrap=True)


def summary(reports: list[TableReport]) -> Table:
    t = Table(title="podyn-fast migrate")
    t.add_column("table", overflow="fold")
    for col in ("items", "rejects", "MB", "seconds", "items/s"):
        t.add_column(col, justify="right")
    t.add_column("state")
    for r in reports:
        # The rate of this run's own work; a rerun that found everything loaded has none.
        rate = f"{r.loaded_now / r.seconds:,.0f}" if r.loaded_now and r.seconds > 0 else "-"
        t.add_row(
            r.name,
            f"{r.items:,}",
            f"{r.rejects:,}",
            f"{r.nbytes / 1e6:.1f}",
            f"{r.seconds:.1f}",
            rate,
            "loaded" if r.loaded else "INCOMPLETE",
        )
    return t
