"""`podyn-fast verify`: read the source again and compare it with the target, row by row.

The source is read as migrate reads it (parallel scan, raw pages, the Rust core's encoding with
the table's recorded layout, the same rate limit), so a row matches exactly when migrate or follow
would have written it that way. Encoded pages go by binary COPY into a temporary table and are
compared in PostgreSQL against the target on the key: missing keys, rows whose content differs,
and at the end target keys the source no longer has. Only keys stay in PostgreSQL's session
memory, never the whole table.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from podyn_fast import state
from podyn_fast._core import COPY_HEADER, COPY_TRAILER, Layout
from podyn_fast.codec import Codec, Page, Unknown
from podyn_fast.dynamo.client import RawDynamo
from podyn_fast.dynamo.scan import RateLimiter, SegmentReader
from podyn_fast.errors import VerifyError
from podyn_fast.postgres import connect, ddl
from podyn_fast.postgres.copy import copy_statement
from podyn_fast.settings import VerifyConfig

# Examples of each kind of difference shown per table.
EXAMPLES = 5


@dataclass
class Difference:
    key: str
    """The key columns, as text."""
    columns: list[str] = field(default_factory=list)
    """For a row whose content differs: the columns that differ."""


@dataclass
class TableVerdict:
    table: str
    source_items: int = 0
    target_rows: int = 0
    rejects: int = 0
    missing: int = 0
    extra: int | None = 0
    """None with --sample: target rows are not all looked for in the source."""
    differing: int = 0
    no_column: set[str] = field(default_factory=set)
    """Source attributes the target has no column for."""
    examples: dict[str, list[Difference]] = field(default_factory=lambda: {"missing": [], "extra": [], "differing": []})

    @property
    def equal(self) -> bool:
        # An item that could not be stored is not in the target: the tables cannot be equal.
        return not (self.missing or self.extra or self.differing or self.no_column or self.rejects)


def run(cfg: VerifyConfig) -> list[TableVerdict]:
    dynamo = RawDynamo.of(cfg.aws)
    with connect.connect(cfg.postgres_url, "podyn-fast verify") as conn:
        state.require_schema(conn, cfg.state_schema)
        names = list(cfg.tables) or state.table_names(conn, cfg.state_schema)
        verdicts = []
        for name in names:
            table = state.get_table(conn, cfg.state_schema, name)
            if table is None:
                raise VerifyError(f"table {name!r} was not migrated (it is not in {cfg.state_schema}.tables)")
            verdicts.append(_Table(conn, dynamo, cfg, table).verify())
    return verdicts


class _Table:
    def __init__(self, conn: psycopg.Connection[Any], dynamo: RawDynamo, cfg: VerifyConfig, table: state.TableState):
        self.conn, self.dynamo, self.cfg, self.table = conn, dynamo, cfg, table
        layout = state.layout(conn, cfg.state_schema, table)
        self.target_columns = set(layout.column_names)
        self.keys = ddl.key_column_names(layout)
        self.verdict = TableVerdict(table.table_name)
        # Temporary tables: this page's encoded rows, and every key read so far.
        self.rows_name = "podyn_verify_rows"
        self.rows = sql.Identifier("pg_temp", self.rows_name)
        self.seen = sql.Identifier("pg_temp", "podyn_verify_keys")
        self.codec = _ScratchCodec(conn, table, layout, self.rows_name, self.verdict.no_column)

    def verify(self) -> TableVerdict:
        t = self.table
        target = sql.Identifier(t.target_schema, t.target_table)
        self.conn.execute(sql.SQL("CREATE TEMP TABLE {} AS SELECT * FROM {} LIMIT 0").format(self.rows, target))
        self.conn.execute(
            sql.SQL("CREATE TEMP TABLE {} AS SELECT {} FROM {} LIMIT 0").format(self.seen, self._keys(), target)
        )
        try:
            for page in self._pages():
                self._compare(page)
            if self.cfg.sample is None:
                self._extras()
            else:
                self.verdict.extra = None
            row = self.conn.execute(sql.SQL("SELECT count(*) FROM {}").format(target)).fetchone()
            self.verdict.target_rows = int(row[0]) if row else 0
        finally:
            # They go with the session anyway; a failure here must not hide the one that got here.
            with contextlib.suppress(psycopg.Error):
                self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}, {}").format(self.rows, self.seen))
        return self.verdict

    def _keys(self, alias: str | None = None) -> sql.Composable:
        return sql.SQL(", ").join(sql.Identifier(alias, k) if alias else sql.Identifier(k) for k in self.keys)

    def _key_match(self, a: str, b: str) -> sql.Composable:
        return sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(sql.Identifier(a, k), sql.Identifier(b, k)) for k in self.keys
        )

    def _unmatched(self, a: str, rows: sql.Composable, b: str, others: sql.Composable) -> sql.Composed:
        """The keys of ``rows`` (as ``a``) that ``others`` (as ``b``) lacks. An outer join, not
        NOT EXISTS: Citus plans a join of a distributed table with a local one (the target with
        the scratch tables), but refuses the correlated subquery ("direct joins between
        distributed and local tables are not supported"). Key columns are never NULL, so a NULL
        key on ``b``'s side means no match."""
        return sql.SQL("SELECT {} FROM {} {} LEFT JOIN {} {} ON {} WHERE {} IS NULL").format(
            self._key_text(a),
            rows,
            sql.Identifier(a),
            others,
            sql.Identifier(b),
            self._key_match(a, b),
            sql.Identifier(b, self.keys[0]),
        )

    def _key_text(self, alias: str) -> sql.Composable:
        # A key shown as (partition key[, sort key]) text.
        return sql.SQL("concat_ws(', ', {})").format(
            sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(alias, k)) for k in self.keys)
        )

    def _pages(self) -> Iterator[Page]:
        """Encoded pages from every segment, read by ``threads`` readers sharing one rate limit."""
        total = self.table.total_segments
        todo: queue.Queue[int] = queue.Queue()
        for segment in range(total):
            todo.put(segment)
        pages: queue.Queue[Page | BaseException | None] = queue.Queue(maxsize=8)
        limiter = RateLimiter(self.cfg.scan_rate)
        stop = threading.Event()
        # With --sample, each segment contributes its first pages until its share is reached.
        share = None if self.cfg.sample is None else max(1, -(-self.cfg.sample // total))

        def read() -> None:
            try:
                while not stop.is_set():
                    try:
                        segment = todo.get_nowait()
                    except queue.Empty:
                        break
                    reader = SegmentReader(
                        self.dynamo,
                        self.table.table_name,
                        segment=segment,
                        total_segments=total,
                        start_key=None,
                        layout=self.codec.layout,
                        limiter=limiter,
                        consistent_read=self.cfg.consistent_read,
                    )
                    reader.start()
                    try:
                        taken = 0
                        while not stop.is_set() and (page := reader.next_page()) is not None:
                            pages.put(page)
                            taken += page.encoded.row_count + len(page.encoded.rejects)
                            if share is not None and taken >= share:
                                break
                    finally:
                        reader.stop()
                pages.put(None)
            except BaseException as e:
                pages.put(e)

        threads = [threading.Thread(target=read, daemon=True) for _ in range(max(1, self.cfg.threads))]
        for th in threads:
            th.start()
        running = len(threads)
        try:
            while running:
                item = pages.get()
                if item is None:
                    running -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:
            stop.set()
            while any(th.is_alive() for th in threads):
                with contextlib.suppress(queue.Empty):
                    pages.get(timeout=0.1)

    def _compare(self, page: Page) -> None:
        encoded = self.codec.complete(page)
        layout = self.codec.layout
        self.verdict.source_items += encoded.row_count
        self.verdict.rejects += len(encoded.rejects)
        if not encoded.row_count:
            return
        with self.conn.transaction():
            stmt = copy_statement("pg_temp", self.rows_name, layout.column_names)
            with self.conn.cursor() as cur, cur.copy(stmt) as copy:
                copy.write(COPY_HEADER + encoded.rows + COPY_TRAILER)
            self.conn.execute(sql.SQL("INSERT INTO {} SELECT {} FROM {}").format(self.seen, self._keys(), self.rows))
            self._count_missing_and_differing(layout)
            self.conn.execute(sql.SQL("TRUNCATE {}").format(self.rows))

    def _count_missing_and_differing(self, layout: Layout) -> None:
        t = self.table
        target = sql.Identifier(t.target_schema, t.target_table)
        v = self.verdict
        # The page's keys the target has, first: on Citus that join runs on the workers, where an
        # outer join of the page with the distributed target would pull every key of the target
        # to the coordinator, page after page.
        found = sql.SQL("SELECT {} FROM {} s JOIN {} t ON {}").format(
            self._keys("s"), self.rows, target, self._key_match("s", "t")
        )
        missing = self.conn.execute(
            sql.SQL("WITH m AS MATERIALIZED ({}) ").format(found)
            + self._unmatched("s", self.rows, "m", sql.Identifier("m"))
        ).fetchall()
        v.missing += len(missing)
        v.examples["missing"] += [Difference(str(k)) for (k,) in missing[: EXAMPLES - len(v.examples["missing"])]]
        columns = layout.column_names
        # Columns the target lacks compare as NULL there.
        theirs = [sql.Identifier("t", c) if c in self.target_columns else sql.SQL("NULL") for c in columns]
        flags = sql.SQL(", ").join(
            sql.SQL("{} IS DISTINCT FROM {}").format(sql.Identifier("s", c), other)
            for c, other in zip(columns, theirs, strict=True)
        )
        differing = self.conn.execute(
            sql.SQL("SELECT {}, ARRAY[{}] FROM {} s JOIN {} t ON {} WHERE ROW({}) IS DISTINCT FROM ROW({})").format(
                self._key_text("s"),
                flags,
                self.rows,
                target,
                self._key_match("s", "t"),
                sql.SQL(", ").join(sql.Identifier("s", c) for c in columns),
                sql.SQL(", ").join(theirs),
            )
        ).fetchall()
        v.differing += len(differing)
        for key, flags_row in differing[: max(0, EXAMPLES - len(v.examples["differing"]))]:
            v.examples["differing"].append(
                Difference(str(key), [c for c, f in zip(columns, flags_row, strict=True) if f])
            )

    def _extras(self) -> None:
        t = self.table
        target = sql.Identifier(t.target_schema, t.target_table)
        extra = self.conn.execute(self._unmatched("t", target, "s", self.seen)).fetchall()
        self.verdict.extra = len(extra)
        self.verdict.examples["extra"] = [Difference(str(k)) for (k,) in extra[:EXAMPLES]]


class _ScratchCodec(Codec):
    """Verify's codec: an attribute the target has no column for gets a column of the scratch
    table only, which the target side compares as NULL, so the rows that have it differ."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        table: state.TableState,
        layout: Layout,
        scratch: str,
        no_column: set[str],
    ) -> None:
        super().__init__(table, layout)
        self.conn, self.scratch, self.no_column = conn, scratch, no_column

    def extend(self, unknown: Unknown) -> None:
        self.no_column |= {a for a, _ in unknown}
        layout = self.layout.with_columns(self.layout.plan_columns(list(unknown)))
        new = [c for c in layout.columns if c not in self.layout.columns]
        self.conn.execute(ddl.add_columns("pg_temp", self.scratch, new))
        self.layout = layout
