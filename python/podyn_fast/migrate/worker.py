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

import psycopg
from psycopg.copy import QueuedLibpqWriter

from podyn_fast import logs, state
from podyn_fast._core import COPY_HEADER, COPY_TRAILER, Reject
from podyn_fast.codec import Page, RegistryCodec
from podyn_fast.dynamo.client import RawDynamo
from podyn_fast.dynamo.scan import RateLimiter, SegmentReader
from podyn_fast.errors import Interrupted, LeaseLost
from podyn_fast.postgres import citus, connect
from podyn_fast.postgres.copy import copy_statement
from podyn_fast.secrets import clean
from podyn_fast.settings import MigrateConfig

log = logging.getLogger("podyn_fast")

# Set by the coordinator to stop a loader that runs in its own process (a single worker): the
# transaction in flight is abandoned (rolled back), as a terminated worker process's is.
STOP = threading.Event()
APPLICATION = "podyn-fast migrate"


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
        self.conn = connect.connect_patiently(cfg.postgres_url, APPLICATION)
        self.dynamo = RawDynamo(region=cfg.aws.region, endpoint_url=cfg.aws.endpoint_url, profile=cfg.aws.profile)
        # The modules and botocore's service model live as long as the process: keep the cyclic
        # collector from walking them again on every full collection.
        gc.freeze()
        self.owner = state.owner_id()
        self.codecs: dict[str, RegistryCodec] = {}
        self.limiters: dict[str, RateLimiter] = {}
        self.result = WorkerResult()

    def close(self) -> None:
        self.conn.close()

    def run(self, tables: list[str]) -> WorkerResult:
        """Load segments of ``tables`` until none is left to claim; after a lost connection
        (PostgreSQL restarted, failed over, the network dropped), reconnect and go on."""
        while True:
            try:
                return self._run(tables)
            except psycopg.OperationalError as e:
                # The segment's open transaction is gone (rolled back): nothing half-done stays.
                self.conn = connect.recover(self.conn, e, self.cfg.postgres_url, APPLICATION)

    def _run(self, tables: list[str]) -> WorkerResult:
        schema = self.cfg.state_schema
        while (held := state.claim(self.conn, schema, tables, self.owner, self.cfg.lease_seconds)) is not None:
            try:
                self.load_segment(held)
                self.result.segments += 1
            except LeaseLost:
                self.result.leases_lost += 1
            except BaseException as e:
                if connect.recoverable(self.conn, e):
                    raise  # the lease is ours to take up again
                # Keep the first error: releasing fails too when the connection is what broke.
                with contextlib.suppress(Exception):
                    state.release(self.conn, schema, held)
                if isinstance(e, Exception) and not isinstance(e, Interrupted):  # stopping is no error
                    message = clean(f"{type(e).__name__}: {e}", self.cfg.postgres_url)
                    state.record_error(self.conn, schema, held.table_name, message)
                raise
        return self.result

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
        reader = SegmentReader(
            self.dynamo,
            held.table_name,
            segment=held.segment,
            total_segments=codec.table.total_segments,
            start_key=held.last_key,
            layout=codec.layout,
            limiter=limiter,
            consistent_read=self.cfg.consistent_read,
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
            reader.stop()

    def _transaction(
        self,
        held: state.Claim,
        codec: RegistryCodec,
        reader: SegmentReader,
        pending: Page | None,
        position: bytes | None,
    ) -> tuple[bool, Page | None, tuple[tuple[str, str], ...], bytes | None]:
        """One transaction: pages' rows, their rejects, and the segment's new position (from
        ``position``, the one committed last).

        Returns (segment done, a page left for the next transaction, attributes to add first, the
        position now committed).
        """
        layout, table = codec.layout, codec.table
        schema = self.cfg.state_schema
        last_key = position
        done = False
        unknown: tuple[tuple[str, str], ...] = ()
        rejects: list[Reject] = []
        items = scanned = nbytes = pages = 0
        capacity = 0.0
        started = time.monotonic()
        with self.conn.transaction(), self.conn.cursor() as cur:
            if self.cfg.citus:
                citus.one_connection_per_node(cur)
            stmt = copy_statement(table.target_schema, table.target_table, layout.column_names)
            with cur.copy(stmt, writer=QueuedLibpqWriter(cur)) as copy:
                copy.write(COPY_HEADER)
                while True:
                    if STOP.is_set():
                        raise Interrupted(signal.SIGINT)
                    page = pending or reader.next_page()
                    pending = None
                    if page is None:
                        done = True
                        break
                    encoded = codec.current(page)
                    if encoded.unknown:
                        pending, unknown = page, encoded.unknown
                        break
                    copy.write(encoded.rows)
                    rejects.extend(encoded.rejects)
                    items += encoded.row_count
                    scanned += encoded.scanned_count or 0
                    nbytes += len(page.body)
                    pages += 1
                    capacity += encoded.consumed_capacity or 0.0
                    last_key = encoded.last_evaluated_key
                    if last_key is None:
                        done = True
                        break
                    if nbytes >= self.cfg.commit_bytes or time.monotonic() - started >= self.cfg.commit_seconds:
                        break
                copy.write(COPY_TRAILER)
            state.record_rejects(self.conn, schema, held.table_name, rejects)
            moved = state.checkpoint(
                self.conn,
                schema,
                held,
                previous_key=position,
                last_key=last_key,
                done=done,
                items=items,
                rejects=len(rejects),
                scanned=scanned,
                nbytes=nbytes,
                pages=pages,
                capacity=capacity,
                lease_seconds=self.cfg.lease_seconds,
            )
            if not moved:
                raise LeaseLost(f"lost the lease on {held.table_name} segment {held.segment}")
        self.result.items += items
        self.result.rejects += len(rejects)
        self.result.bytes += nbytes
        return done, pending, unknown, last_key


def init_process(coordinator: int, json_logs: bool) -> None:
    """Worker process initializer: exit as soon as the coordinator is gone.

    A pool worker whose parent was killed would otherwise load on alone, then wait forever for its
    next task (its siblings keep the task pipe open). Dying mid-transaction is safe: PostgreSQL
    rolls it back, and the lease of a dead process on this host is taken over at once.
    """
    logs.configure(json=json_logs)
    # Ctrl-C reaches the whole process group: the coordinator decides when its workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == coordinator:
            time.sleep(0.5)
        os._exit(70)

    threading.Thread(target=watch, name="parent watchdog", daemon=True).start()


def w_load(cfg: MigrateConfig, tables: list[str]) -> WorkerResult:
    """Worker process entry point: load segments of ``tables`` until none is left."""
    loader = Loader(cfg)
    try:
        return loader.run(tables)
    finally:
        loader.close()
