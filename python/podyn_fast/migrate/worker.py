"""Loader worker: lease a segment, scan it, encode its pages, COPY them with their checkpoint.

One worker process holds one PostgreSQL connection and loads one segment at a time. A reader
thread sends the Scan requests and encodes each page (the Rust core and the socket both release the
GIL), while this thread writes COPY data, whose sending psycopg's queued writer does in a third
thread: network, encoding and COPY overlap. Every transaction carries several MB of rows plus the
segment's new position, so a crash at any moment loses nothing and duplicates nothing.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
from psycopg.copy import QueuedLibpqWriter

from podyn_fast import logs, malloc, state
from podyn_fast._core import COPY_HEADER, COPY_TRAILER, Encoded
from podyn_fast.codec import Page, RegistryCodec
from podyn_fast.dynamo import exports
from podyn_fast.dynamo.client import RawDynamo, s3_client
from podyn_fast.dynamo.exports import ExportFileReader
from podyn_fast.dynamo.scan import PageReader, RateLimiter, SegmentReader
from podyn_fast.errors import Interrupted, LeaseLost
from podyn_fast.migrate.lease import LeaseKeeper
from podyn_fast.postgres import citus, connect
from podyn_fast.postgres.copy import copy_rows, copy_statement
from podyn_fast.secrets import clean
from podyn_fast.settings import MigrateConfig

log = logging.getLogger("podyn_fast")

# Set by the coordinator to stop a loader that runs in its own process (a single worker): the
# transaction in flight is abandoned (rolled back), as a terminated worker process's is.
STOP = threading.Event()
APPLICATION = "podyn-fast migrate"


def session_name(owner: str) -> str:
    """The application_name of a loader's sessions: the owner's random token makes it its own
    (application_name holds 63 bytes: not the whole owner)."""
    parsed = state.Owner.parse(owner)
    assert parsed is not None, f"not an owner of this version: {owner!r}"
    return f"{APPLICATION} {parsed.token}"


@dataclass
class WorkerResult:
    """What one worker did, summed over its segments."""

    segments: int = 0
    items: int = 0
    rejects: int = 0
    bytes: int = 0
    leases_lost: int = 0
    tables: dict[str, int] = field(default_factory=dict)


class Loader:
    """The per-process state of a worker: its connection, clients and cached table layouts."""

    def __init__(self, cfg: MigrateConfig) -> None:
        self.cfg = cfg
        # The coordinator connected already: a server that cannot be reached now is restarting.
        self.owner = state.owner_id()
        # Named by the owner's token, so that whoever takes its segments over can end its sessions.
        self.application = session_name(self.owner)
        self.conn = connect.connect_patiently(cfg.postgres_url, self.application)
        self.dynamo = RawDynamo.of(cfg.aws)
        # The modules and botocore's service model live as long as the process: keep the cyclic
        # collector from walking them again on every full collection.
        gc.freeze()
        self.keeper = LeaseKeeper(cfg.postgres_url, cfg.state_schema, self.owner, cfg.lease_seconds, self.application)
        self.keeper.start()
        self.codecs: dict[str, RegistryCodec] = {}
        self.s3: Any = None
        self.manifests: dict[str, exports.Manifest] = {}
        self.limiters: dict[str, RateLimiter] = {}
        self.result = WorkerResult()
        self.holding: state.Claim | None = None
        """The segment being loaded, if any."""

    def close(self) -> None:
        self.keeper.close()
        self.conn.close()

    def run(self, tables: list[str]) -> WorkerResult:
        """Load segments of ``tables`` until none is left to claim; after a lost connection
        (PostgreSQL restarted, failed over, the network dropped), reconnect and go on."""
        while True:
            try:
                return self._run(tables)
            except psycopg.OperationalError as e:
                # The segment's open transaction is gone (rolled back): nothing half-done stays.
                self.conn = connect.recover(self.conn, e, self.cfg.postgres_url, self.application)
                if self.holding is not None and self._lost(self.holding):
                    # Its sessions were ended by the worker that took the segment over.
                    self._step_aside(self.holding, "its lease ran out while this worker was away")
                self.holding = None

    def _run(self, tables: list[str]) -> WorkerResult:
        schema = self.cfg.state_schema
        while (held := state.claim(self.conn, schema, tables, self.owner, self.cfg.lease_seconds)) is not None:
            if held.taken_from is not None:
                self._take_over(held, held.taken_from)
            self.holding = held
            try:
                self.load_segment(held)
                self.result.segments += 1
                self.holding = None
            except LeaseLost as e:
                self.holding = None
                self._step_aside(held, str(e))
            except BaseException as e:
                if connect.recoverable(self.conn, e):
                    raise  # the lease is ours to take up again
                self.holding = None
                if isinstance(e, psycopg.Error) and self._lost(held):
                    # What another holder's rows made fail here (a duplicate key, or Citus's own
                    # error for it): this transaction is rolled back, the segment is theirs.
                    self._step_aside(held, f"{type(e).__name__} after the lease was lost")
                    continue
                # Keep the first error: releasing fails too when the connection is what broke.
                with contextlib.suppress(Exception):
                    state.release(self.conn, schema, held)
                if isinstance(e, Exception) and not isinstance(e, Interrupted):  # stopping is no error
                    message = clean(f"{type(e).__name__}: {e}", self.cfg.postgres_url)
                    state.record_error(self.conn, schema, held.table_name, message)
                raise
        return self.result

    def _take_over(self, held: state.Claim, previous: str) -> None:
        """``held`` was ``previous``'s, gone or out of lease: end its sessions, whose open
        transaction (rows of this very segment, uncommitted) would make these rows wait on it."""
        # An owner of an older version names no sessions of its own: its lease's expiry has to do.
        ended = connect.end_sessions(self.conn, session_name(previous)) if state.Owner.parse(previous) else 0
        log.warning(
            "taking over %s segment %d from %s, which is gone or whose lease ran out (%d session(s) of it ended)",
            held.table_name,
            held.segment,
            previous,
            ended,
        )

    def _lost(self, held: state.Claim) -> bool:
        try:
            return not state.holds(self.conn, self.cfg.state_schema, held)
        except psycopg.Error:
            return False

    def _step_aside(self, held: state.Claim, why: str) -> None:
        """Another worker took ``held`` over (this one was stopped or cut off past its lease):
        nothing of this one's last transaction was committed; go on with other segments."""
        self.result.leases_lost += 1
        log.warning(
            "%s segment %d: %s; another worker has it now, going on with others", held.table_name, held.segment, why
        )

    def _s3(self) -> Any:
        if self.s3 is None:
            self.s3 = s3_client(self.cfg.aws)
        return self.s3

    def _manifest(self, url: str) -> exports.Manifest:
        """The manifest of the export a table is loaded from (read once per process): its data
        files, in the manifest's order, are the table's segments."""
        if url not in self.manifests:
            self.manifests[url] = exports.read_manifest(self._s3(), exports.ExportLocation.parse(url))
        return self.manifests[url]

    def _codec(self, name: str) -> RegistryCodec:
        if name not in self.codecs:
            found = state.get_table(self.conn, self.cfg.state_schema, name)
            assert found is not None, f"table {name!r} has segments but no state"
            self.codecs[name] = RegistryCodec(lambda: self.conn, self.cfg.state_schema, found, self.cfg.column_limit)
            self.limiters[name] = RateLimiter(self.cfg.scan_rate)
        return self.codecs[name]

    def load_segment(self, held: state.Claim) -> None:
        codec = self._codec(held.table_name)
        limiter = self.limiters[held.table_name]
        limiter.share = state.active_leases(self.conn, self.cfg.state_schema, held.table_name)
        reader: PageReader
        if codec.table.source is not None:
            manifest = self._manifest(codec.table.source)
            reader = ExportFileReader(
                self._s3(),
                manifest.location.bucket,
                manifest.files[held.segment],
                start=held.last_key,
                layout=codec.layout,
                alive=self.keeper.alive,
            )
        else:
            reader = SegmentReader(
                self.dynamo,
                held.table_name,
                segment=held.segment,
                total_segments=codec.table.total_segments,
                start_key=held.last_key,
                layout=codec.layout,
                limiter=limiter,
                consistent_read=self.cfg.consistent_read,
                alive=self.keeper.alive,
            )
        reader.start()
        try:
            pending: Page | None = None
            done = False
            # The position committed last: each transaction moves it on, and only from there.
            position = held.last_key
            while not done:
                done, pending, unknown, position = self._transaction(held, codec, reader, pending, position)
                if unknown:
                    # Outside the transaction: the ALTER must not wait behind this session's COPY.
                    codec.extend(unknown)
                    reader.layout = codec.layout
                limiter.share = state.active_leases(self.conn, self.cfg.state_schema, held.table_name)
        finally:
            reader.stop(wait=not STOP.is_set())  # stopping: no need to wait for a slow page

    def _transaction(
        self,
        held: state.Claim,
        codec: RegistryCodec,
        reader: PageReader,
        pending: Page | None,
        position: bytes | None,
    ) -> tuple[bool, Page | None, tuple[tuple[str, str], ...], bytes | None]:
        """One transaction: pages' rows, their rejects, and the segment's new position (from
        ``position``, the one committed last).

        Returns (segment done, a page left for the next transaction, attributes to add first, the
        position now committed).
        """
        taken: list[tuple[Page, Encoded]] = []
        out = _Outcome(last_key=position)
        try:
            with self.conn.transaction(), self.conn.cursor() as cur:
                self._copy_pages(cur, codec, reader, pending, out, taken)
                self._checkpoint(held, position, out)
        except psycopg.errors.ProgramLimitExceeded as e:
            if not taken:
                raise
            # A row PostgreSQL cannot store (too big for a page, or a key too long for its index)
            # refused the whole COPY: the same pages again, item by item, rejecting what is refused;
            # a page left for the next transaction (new attributes) stays so.
            log.warning("%s segment %d: %s; loading those pages item by item", held.table_name, held.segment, e)
            left = _Outcome(pending=out.pending, unknown=out.unknown)
            with self.conn.transaction(), self.conn.cursor() as cur:
                out = self._copy_one_by_one(cur, codec, taken, left)
                self._checkpoint(held, position, out)
        self.keeper.alive()
        self.result.items += out.items
        self.result.rejects += len(out.rejects)
        self.result.bytes += out.nbytes
        return out.done, out.pending, out.unknown, out.last_key if out.pages else position

    def _copy_pages(
        self,
        cur: psycopg.Cursor[Any],
        codec: RegistryCodec,
        reader: PageReader,
        pending: Page | None,
        out: _Outcome,
        taken: list[tuple[Page, Encoded]],
    ) -> None:
        """Pages COPYed as they arrive, up to the transaction's size or time, counted in ``out``;
        ``taken`` gets each page written."""
        table = codec.table
        started = time.monotonic()
        if self.cfg.citus:
            citus.one_connection_per_node(cur)
        stmt = copy_statement(table.target_schema, table.target_table, codec.layout.column_names)
        with cur.copy(stmt, writer=QueuedLibpqWriter(cur)) as copy:
            copy.write(COPY_HEADER)
            while True:
                if STOP.is_set():
                    raise Interrupted(signal.SIGINT)
                page = pending or reader.next_page(STOP)
                pending = None
                if page is None:
                    out.done = True
                    break
                encoded = codec.current(page)
                if encoded.unknown:
                    out.pending, out.unknown = page, encoded.unknown
                    break
                self.keeper.alive()
                taken.append((page, encoded))
                copy.write(encoded.rows)
                out.add(page, encoded, encoded.row_count)
                if out.done or out.nbytes >= self.cfg.commit_bytes:
                    break
                if time.monotonic() - started >= self.cfg.commit_seconds:
                    break
            copy.write(COPY_TRAILER)

    def _copy_one_by_one(
        self, cur: psycopg.Cursor[Any], codec: RegistryCodec, taken: list[tuple[Page, Encoded]], out: _Outcome
    ) -> _Outcome:
        """``taken`` again, counted in ``out``, each page in a savepoint of its own; a page refused
        is loaded item by item, and an item refused goes to the rejects with its raw JSON and
        PostgreSQL's reason."""
        table, layout = codec.table, codec.layout
        keys = [a for a, _ in table.keys]
        if self.cfg.citus:
            citus.one_connection_per_node(cur)
        for page, encoded in taken:
            try:
                with self.conn.transaction():
                    copy_rows(cur, table.target_schema, table.target_table, layout.column_names, [encoded.rows])
                out.add(page, encoded, encoded.row_count)
                continue
            except psycopg.errors.ProgramLimitExceeded:
                pass
            written = 0
            for item in page.items():
                raw = orjson.dumps(item)
                one = layout.encode_item(raw)
                out.rejects.extend(one.rejects)
                if not one.row_count:
                    continue
                try:
                    with self.conn.transaction():
                        copy_rows(cur, table.target_schema, table.target_table, layout.column_names, [one.rows])
                    written += 1
                except psycopg.errors.ProgramLimitExceeded as e:
                    key = orjson.dumps({k: item[k] for k in keys if k in item})
                    out.rejects.append(state.Refused.by_postgres(key, raw, e))
            out.add(page, encoded, written, rejects=False)
        return out

    def _checkpoint(self, held: state.Claim, position: bytes | None, out: _Outcome) -> None:
        """The rejects and the segment's new position, in the transaction of the rows."""
        schema = self.cfg.state_schema
        state.record_rejects(self.conn, schema, held.table_name, out.rejects)
        moved = state.checkpoint(
            self.conn,
            schema,
            held,
            previous_key=position,
            last_key=out.last_key if out.pages else position,
            done=out.done,
            items=out.items,
            rejects=len(out.rejects),
            scanned=out.scanned,
            nbytes=out.nbytes,
            pages=out.pages,
            capacity=out.capacity,
            lease_seconds=self.cfg.lease_seconds,
        )
        if not moved:
            raise LeaseLost(f"lost the lease on {held.table_name} segment {held.segment}")


@dataclass
class _Outcome:
    """What one transaction wrote, and where the segment stands after it."""

    last_key: bytes | None = None
    done: bool = False
    pending: Page | None = None
    unknown: tuple[tuple[str, str], ...] = ()
    rejects: list[state.RejectLike] = field(default_factory=list)
    items: int = 0
    scanned: int = 0
    nbytes: int = 0
    pages: int = 0
    capacity: float = 0.0

    def add(self, page: Page, encoded: Encoded, rows: int, *, rejects: bool = True) -> None:
        """``page`` written, ``rows`` of its rows stored (its own rejects with them, unless the
        caller kept them already)."""
        if rejects:
            self.rejects.extend(encoded.rejects)
        self.items += rows
        self.scanned += encoded.scanned_count or 0
        self.nbytes += len(page.body)
        self.pages += 1
        self.capacity += encoded.consumed_capacity or 0.0
        self.last_key = page.position
        self.done = self.last_key is None


def init_process(coordinator: int, json_logs: bool) -> None:
    """Worker process initializer: exit as soon as the coordinator is gone.

    A pool worker whose parent was killed would otherwise load on alone, then wait forever for its
    next task (its siblings keep the task pipe open). Dying mid-transaction is safe: PostgreSQL
    rolls it back, and the lease of a dead process on this host is taken over at once.
    """
    logs.configure(json=json_logs)
    malloc.keep_freed_memory()  # a forked worker has it from the coordinator, a spawned one not
    # Ctrl-C reaches the whole process group: the coordinator decides when its workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # SIGTERM from the coordinator ends a worker at once; a forked one inherited its handler.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def watch() -> None:
        while os.getppid() == coordinator:
            time.sleep(0.5)
        os._exit(70)

    threading.Thread(target=watch, name="parent watchdog", daemon=True).start()


def w_ready() -> None:
    """A task that does nothing: sent to each worker process as soon as it is started, so that it
    starts and imports this module (most of its start-up) while the coordinator plans."""


def w_load(cfg: MigrateConfig, tables: list[str]) -> WorkerResult:
    """Worker process entry point: load segments of ``tables`` until none is left."""
    loader = Loader(cfg)
    try:
        return loader.run(tables)
    finally:
        loader.close()
