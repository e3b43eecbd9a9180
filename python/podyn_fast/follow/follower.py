"""`follow`: apply DynamoDB Streams changes to PostgreSQL, exactly once, shard lineage in order.

One process follows every table it is given, multiplexing their shards in one loop: the shard
whose turn comes first is read, its GetRecords body is collapsed per key by the Rust core and
applied (upserts, deletes, new columns) in one transaction together with the shard's checkpoint,
so a crash at any moment is recovered by running the same command again. A child shard is read
only once its parent is finished. While a table is still loading, its changes are kept in the
state schema instead (raw, as received) and applied in order once the load is done.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import orjson
import psycopg
from botocore.exceptions import ClientError

from podyn_fast import malloc, retry, state
from podyn_fast._core import StreamBatch, StreamPosition, stream_position
from podyn_fast.codec import RegistryCodec
from podyn_fast.dynamo.client import RawDynamo
from podyn_fast.errors import BodyError, FollowError, Gap
from podyn_fast.follow import apply
from podyn_fast.postgres import citus, connect
from podyn_fast.settings import FollowConfig

log = logging.getLogger("podyn_fast")
T = TypeVar("T")

# An idle shard is polled again after this long, doubling up to the cap (Lambda polls 4 times a
# second; the adapter waits up to a second).
IDLE_FIRST = 0.1
IDLE_CAP = 2.0
# Idle shards together are polled about this often at most: a table of thousands of quiet shards
# raises their cap (1,000 shards: each every 10 s) instead of the requests; a shard with records
# is read again at once, whatever the others do.
IDLE_READS_PER_SECOND = 100.0
# How often the shard graph is read again (DescribeStream allows 10 calls a second per account).
GRAPH_EVERY = 10.0
APPLICATION = "podyn-fast follow"
# Answers in a row for one shard that cannot be read before the table stops following.
MAX_UNREADABLE = 5
# How long a stream keeps its records, and how close to that a first read is too late (the
# records' trimming is not to the second).
STREAM_RETENTION = 24 * 3600.0
RETENTION_MARGIN = 600.0
# A transaction applies what one turn over the due shards read, up to about this much: the
# commit, the statements and the collapse per key are paid once for many responses.
GROUP_RECORDS = 20_000
GROUP_BYTES = 8 << 20
# A GetRecords answer holds at most 1,000 records and 1 MB: one that holds about that much says
# its shard has more.
RECORDS_PER_READ = 1000
FULL_BODY = 900_000
# GetRecords requests in flight at once, each for a shard of its own: a round trip to Streams
# is paid once for as many shards.
READS_IN_FLIGHT = 8
# Seconds between the lag and liveness a follower records for `status`.
HEARTBEAT_EVERY = 5.0


@dataclass
class Shard:
    shard_id: str
    parent: str | None
    last_sequence: str | None = None
    finished: bool = False
    iterator: str | None = None
    next_poll: float = 0.0
    idle_delay: float = 0.0
    failures: retry.Backoff = field(default_factory=lambda: retry.Backoff(1.0, IDLE_CAP * 5))
    """Reads that failed in a row (throttled, the network): each waits longer before the next."""
    unreadable: int = 0
    """Answers in a row that could not be read."""
    last_data: float = 0.0
    """When this shard last returned records, or was first read."""
    reads: int = 0
    at_head: bool = False
    """Its last read returned no record: everything it had so far is applied."""


@dataclass
class Followed:
    """A followed table: its codec (state row and layout), stream and shards."""

    codec: RegistryCodec
    stream_arn: str
    shards: dict[str, Shard] = field(default_factory=dict)
    graph_read: float = 0.0
    graph_stale: bool = True
    """A shard finished: its children may have appeared since the graph was last read."""
    phase: str = "loading"
    applied: int = 0
    rejects: int = 0
    last_created: float | None = None
    stopped: str | None = None

    @property
    def table(self) -> state.TableState:
        return self.codec.table

    def lag(self) -> float | None:
        """Seconds behind the source: none once every open shard has been read to its head (an
        idle table is not late), else the age of the last change applied; None before any."""
        open_shards = [s for s in self.shards.values() if not s.finished]
        if self.phase == "following" and open_shards and all(s.at_head for s in open_shards):
            return 0.0
        return time.time() - self.last_created if self.last_created is not None else None


@dataclass(frozen=True, eq=False)
class Read:
    """One GetRecords response of a shard, read and not yet committed."""

    f: Followed
    shard: Shard
    body: bytes
    position: StreamPosition


@dataclass
class FollowReport:
    name: str
    applied: int
    rejects: int
    lag_seconds: float | None
    stopped: str | None


class Follower:
    """Follows tables until stopped (or idle, with ``exit_when_idle``)."""

    def __init__(self, cfg: FollowConfig, stop: threading.Event | None = None) -> None:
        self.cfg = cfg
        self.stop = stop or threading.Event()
        self.conn = connect.connect(cfg.postgres_url, APPLICATION)
        self.dynamo = RawDynamo.of(cfg.aws)
        self.readers = ThreadPoolExecutor(READS_IN_FLIGHT, thread_name_prefix="shard reader")
        self.ahead: list[tuple[tuple[Followed, Shard], Future[Read | Gap | None]]] = []
        self.followed: dict[str, Followed] = {}
        self.last_heartbeat = 0.0
        self.idle_cap = IDLE_CAP
        self.citus = False

    def close(self) -> None:
        self._drop_reads_ahead()
        self.readers.shutdown(wait=True, cancel_futures=True)
        self.conn.close()

    # -- setup ---------------------------------------------------------------------------------

    def start(self, only: list[str] | None = None) -> None:
        """Lock, check and load the tables to follow (``only`` these, when given)."""
        malloc.keep_freed_memory()  # GetRecords bodies of up to 1 MB, one after another
        schema = self.cfg.state_schema
        state.ensure_schema(self.conn, schema)
        self.citus = citus.installed(self.conn)
        names = list(only if only is not None else self.cfg.tables) or state.table_names(self.conn, schema)
        if not names:
            raise FollowError(f"no table to follow: run `podyn-fast migrate` first (state schema {schema!r} is empty)")
        for name in names:
            table = state.get_table(self.conn, schema, name)
            if table is None:
                raise FollowError(
                    f"table {name!r} has not been migrated: run `podyn-fast migrate --table {name}` first"
                )
            if not state.lock_follower(self.conn, schema, name):
                raise FollowError(f"table {name!r} is already being followed by another podyn-fast process")
            if table.stopped:
                raise FollowError(f"table {name!r} stopped following: {table.stopped}")
            description = self.dynamo.client.describe_table(TableName=name)["Table"]
            arn = description.get("LatestStreamArn")
            enabled = description.get("StreamSpecification", {}).get("StreamEnabled", arn is not None)
            if arn is None or not enabled:
                raise FollowError(
                    f"table {name!r} has no stream: enable one with NEW_AND_OLD_IMAGES (or NEW_IMAGE), "
                    f"then re-migrate the table, since changes before the stream existed are not captured"
                )
            gap = self._gap_at_start(table, arn)
            if gap is not None:
                state.set_stopped(self.conn, schema, name, gap)
                raise FollowError(gap)
            if table.stream_arn is None:
                state.set_stream(self.conn, schema, name, arn)
            codec = RegistryCodec(lambda: self.conn, schema, table, self.cfg.column_limit)
            followed = Followed(codec, arn)
            for c in state.shards(self.conn, schema, name, arn):
                followed.shards[c.shard_id] = Shard(c.shard_id, c.parent, c.last_sequence, c.finished)
            self.followed[name] = followed

    def _gap_at_start(self, table: state.TableState, arn: str) -> str | None:
        """Why the stream cannot hold every change since the load began, if it cannot: another
        stream than the load's, a stream enabled after the load began, or a first read of it once
        the records from the load's start may have aged out (streams keep 24 hours)."""
        name = table.table_name
        if table.stream_arn is not None and table.stream_arn != arn:
            return _new_stream_message(name, table.stream_arn, arn)
        if table.load_age is None:
            return None  # no load yet (its changes matter from when it starts), or an older state
        if table.stream_arn is None:
            return (
                f"table {name!r}: its stream ({arn}) was enabled after the load began, so the changes made "
                f"in between were not captured; re-migrate the table (drop it and its row in "
                f"{self.cfg.state_schema}.tables, then run migrate --follow)"
            )
        first_read = not state.shards(self.conn, self.cfg.state_schema, name, arn)
        if first_read and table.load_age > STREAM_RETENTION - RETENTION_MARGIN:
            return (
                f"table {name!r}: its load began {table.load_age / 3600:.1f} hours ago and its stream was never "
                f"read: a stream keeps 24 hours, so the changes from the start of the load may be gone; "
                f"re-migrate the table with --follow, which captures the changes from the start"
            )
        return None

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> list[FollowReport]:
        """Follow until stopped, or idle long enough with ``exit_when_idle``."""
        self.start()
        try:
            while True:
                try:
                    self._loop()
                    break
                except psycopg.OperationalError as e:
                    # Nothing uncommitted counts: carry on from the checkpoints.
                    self.conn = connect.recover(self.conn, e, self.cfg.postgres_url, APPLICATION, self.stop)
                    self._resume()
        finally:
            with contextlib.suppress(psycopg.Error):
                self._heartbeat()
            self.close()
        return [
            FollowReport(f.table.table_name, f.applied, f.rejects, f.lag(), f.stopped) for f in self.followed.values()
        ]

    def _loop(self) -> None:
        while not self.stop.is_set():
            active = [f for f in self.followed.values() if f.stopped is None]
            if not active:
                break
            for f in active:
                self._promote(f)
                try:
                    self._refresh(f)
                except retry.AWS_FAILURES as e:
                    if not (failure := retry.aws_failure(e)).transient:
                        raise
                    log.warning("reading the shards of %s failed (%s); retrying", f.table.table_name, failure.why)
            if time.monotonic() - self.last_heartbeat >= HEARTBEAT_EVERY:
                self._heartbeat()
            if self._idle(active):
                break
            quiet = sum(1 for _, shard in self._readable(active) if shard.at_head)
            self.idle_cap = max(IDLE_CAP, quiet / IDLE_READS_PER_SECOND)
            group, behind = self._read_ready(active)
            if group:
                if behind:  # a backlog: its next round is read while this one commits
                    self.ahead = self._start_reads([f for f in active if f.stopped is None])
                self._commit(group)
                continue
            due = self._next_poll(active)
            wait = 0.2 if due is None else due - time.monotonic()
            if wait > 0:
                self.stop.wait(min(wait, 0.5))

    def _read_ready(self, active: list[Followed]) -> tuple[list[Read], bool]:
        """Read the shards whose turn has come, several at once (each shard one response at a
        time), round after round while they have records, until the group is as large as a
        transaction should be or no shard is due. The first round may be one read ahead, while
        the previous group committed. Returns the group, and whether a shard is still behind
        (its last answer held all it may)."""
        group: list[Read] = []
        records = size = 0
        behind = True  # until a round says otherwise
        while behind and records < GROUP_RECORDS and size < GROUP_BYTES and not self.stop.is_set():
            reads, self.ahead = self.ahead or self._start_reads(active), []
            # Another round only while a shard answered with all it may (a backlog): a shard that
            # answered with less is at its head, and what it had waits for no one.
            behind = False
            for (f, _), outcome in ((pick, future.result()) for pick, future in reads):
                if isinstance(outcome, Gap):
                    self._stop(f, str(outcome))
                elif outcome is not None:
                    group.append(outcome)
                    records += outcome.position.records
                    size += len(outcome.body)
                    behind |= outcome.position.records >= RECORDS_PER_READ or len(outcome.body) >= FULL_BODY
            active = [f for f in active if f.stopped is None]
        # A table stopped meanwhile commits nothing more: its checkpoints stay where they are.
        return [r for r in group if r.f.stopped is None], behind

    def _start_reads(self, active: list[Followed]) -> list[tuple[tuple[Followed, Shard], Future[Read | Gap | None]]]:
        """Start reading the shards due now, the longest waiting first, as many as may be in flight."""
        now = time.monotonic()
        due = sorted((fs for fs in self._readable(active) if fs[1].next_poll <= now), key=lambda fs: fs[1].next_poll)
        return [(pick, self.readers.submit(self._read_or_gap, pick)) for pick in due[:READS_IN_FLIGHT]]

    def _drop_reads_ahead(self) -> None:
        """Forget the reads started ahead: nothing of them is committed, so they are read again."""
        for _, future in self.ahead:
            future.cancel()
            with contextlib.suppress(Exception):
                future.result()
        self.ahead = []

    def _read_or_gap(self, pick: tuple[Followed, Shard]) -> Read | Gap | None:
        """In a reader thread: ``_read``, with a gap returned for the loop to stop the table."""
        try:
            return self._read(*pick)
        except Gap as gap:
            return gap

    def _resume(self) -> None:
        """The followed tables again from their checkpoints: what was read but not committed is
        read again."""
        self._drop_reads_ahead()
        before = dict(self.followed)
        self.followed = {name: f for name, f in before.items() if f.stopped is not None}
        active = [name for name, f in before.items() if f.stopped is None]
        if active:
            self.start(active)
        for name, f in self.followed.items():
            f.applied, f.rejects = before[name].applied, before[name].rejects
        log.warning("following again from the checkpoints")

    def _heartbeat(self) -> None:
        self.last_heartbeat = time.monotonic()
        state.heartbeat(self.conn, self.cfg.state_schema, {n: f.lag() for n, f in self.followed.items()})

    def _stop(self, f: Followed, why: str) -> None:
        f.stopped = why
        state.set_stopped(self.conn, self.cfg.state_schema, f.table.table_name, why)
        log.error("%s", why)

    def _idle(self, active: list[Followed]) -> bool:
        limit = self.cfg.exit_when_idle
        if limit is None or self.ahead:  # what is being read ahead may hold records
            return False
        now = time.monotonic()
        for f in active:
            if f.phase != "following":
                return False
            for shard in f.shards.values():
                # Idle is read to its head (its last read found nothing) and quiet since: a shard
                # never read, or whose reads keep failing (throttled, expired), may hold more.
                if not shard.finished and (not shard.at_head or now - shard.last_data < limit):
                    return False
        return True

    def _refresh(self, f: Followed) -> None:
        """Read the shard graph again when it is due (and check the stream is still the same)."""
        now = time.monotonic()
        if now - f.graph_read < (1.0 if f.graph_stale else GRAPH_EVERY):
            return
        f.graph_read, f.graph_stale = now, False
        name = f.table.table_name
        description = self.dynamo.client.describe_table(TableName=name)["Table"]
        arn = description.get("LatestStreamArn")
        if arn != f.stream_arn:
            self._stop(f, _new_stream_message(name, f.stream_arn, arn))
            return
        enabled = description.get("StreamSpecification", {}).get("StreamEnabled", True)
        if not enabled and f.shards and all(s.finished for s in f.shards.values()):
            # Every record the stream holds is applied; nothing records the changes made since.
            self._stop(
                f,
                f"table {name!r}: its stream was turned off, so changes made since are not captured (every change "
                f"recorded before was applied); turn a stream on again and re-migrate the table",
            )
            return
        listed: dict[str, str | None] = {}
        kwargs: dict[str, Any] = {"StreamArn": f.stream_arn}
        while True:
            page = self.dynamo.streams.describe_stream(**kwargs)["StreamDescription"]
            for s in page.get("Shards", []):
                listed[s["ShardId"]] = s.get("ParentShardId")
            last = page.get("LastEvaluatedShardId")
            if not last:
                break
            kwargs["ExclusiveStartShardId"] = last
        for shard_id, parent in listed.items():
            if shard_id not in f.shards:
                f.shards[shard_id] = Shard(shard_id, parent)
        for shard in f.shards.values():
            if not shard.finished and shard.shard_id not in listed:
                self._stop(
                    f,
                    f"table {name!r}: shard {shard.shard_id} of its stream vanished before it was read to "
                    f"its end, so changes were lost; re-migrate the table (drop it and its rows in "
                    f"{self.cfg.state_schema}.tables, then run migrate --follow again)",
                )
                return

    def _readable(self, active: list[Followed]) -> list[tuple[Followed, Shard]]:
        """The shards that may be read: open, and past their parent (lineage: a child waits until
        its parent is read to its end)."""
        readable = []
        for f in active:
            for shard in f.shards.values():
                parent = f.shards.get(shard.parent) if shard.parent else None
                if not shard.finished and (parent is None or parent.finished):
                    readable.append((f, shard))
        return readable

    def _next_poll(self, active: list[Followed]) -> float | None:
        """When the next shard is due; None when none may be read."""
        return min((shard.next_poll for _, shard in self._readable(active)), default=None)

    # -- one batch -----------------------------------------------------------------------------

    def _iterator(self, f: Followed, shard: Shard) -> str:
        params: dict[str, Any] = {"StreamArn": f.stream_arn, "ShardId": shard.shard_id}
        if shard.last_sequence is None:
            params["ShardIteratorType"] = "TRIM_HORIZON"
        else:
            params["ShardIteratorType"] = "AFTER_SEQUENCE_NUMBER"
            params["SequenceNumber"] = shard.last_sequence
        try:
            iterator: str = self.dynamo.streams.get_shard_iterator(**params)["ShardIterator"]
        except ClientError as e:
            raise self._gap_or(f, shard, e) from None
        return iterator

    def _gap_or(self, f: Followed, shard: Shard, e: ClientError) -> BaseException:
        code = e.response.get("Error", {}).get("Code")
        name = f.table.table_name
        if code == "TrimmedDataAccessException":
            return Gap(
                f"table {name!r}: the stream no longer holds the records after the last one applied from "
                f"shard {shard.shard_id} (they were trimmed: streams keep 24 hours), so changes were lost; "
                f"re-migrate the table"
            )
        if code == "ResourceNotFoundException":
            return Gap(f"table {name!r}: shard {shard.shard_id} or its stream is gone; re-migrate the table")
        error: BaseException = e
        return error

    def _read(self, f: Followed, shard: Shard) -> Read | None:
        """One turn of a shard: its next response, or None when it has nothing to commit. A read
        that fails (GetShardIterator, GetRecords, an answer that cannot be read) is tried again
        later, this shard waiting while the others go on."""
        try:
            return self._read_once(f, shard)
        except (*retry.AWS_FAILURES, BodyError) as e:
            code = e.response.get("Error", {}).get("Code") if isinstance(e, ClientError) else None
            if code == "ExpiredIteratorException" or (code == "TrimmedDataAccessException" and not shard.last_sequence):
                # Renewed from the checkpoint on the next turn; a shard never read has nothing to
                # lose to trimming (only records older than its new TRIM_HORIZON, from before the
                # load: _gap_at_start saw to that).
                shard.iterator = None
                return None
            if isinstance(e, BodyError):
                shard.unreadable += 1
                if shard.unreadable > MAX_UNREADABLE:
                    raise Gap(
                        f"table {f.table.table_name!r}: {MAX_UNREADABLE + 1} answers in a row for shard "
                        f"{shard.shard_id} could not be read ({e}); run follow again to retry from the checkpoint"
                    ) from None
                why = f"unreadable answer: {e}"
            elif not (failure := retry.aws_failure(e)).transient:
                raise self._gap_or(f, shard, e) if isinstance(e, ClientError) else e from None
            else:
                why = failure.why
            shard.next_poll = time.monotonic() + shard.failures.delay()
            log.warning("reading %s shard %s failed (%s); retrying", f.table.table_name, shard.shard_id, why)
            return None

    def _read_once(self, f: Followed, shard: Shard) -> Read | None:
        if shard.iterator is None:
            shard.iterator = self._iterator(f, shard)
        body = self.dynamo.get_records(shard.iterator, RECORDS_PER_READ)
        position = stream_position(body)
        now = time.monotonic()
        if shard.reads == 0:
            shard.last_data = now
        shard.reads += 1
        shard.at_head = not position.records
        shard.failures.reset()
        shard.unreadable = 0
        if position.records:
            shard.last_data = now
            shard.idle_delay = 0.0
            shard.next_poll = now
        else:
            shard.idle_delay = min(self.idle_cap, max(IDLE_FIRST, shard.idle_delay * 2))
            shard.next_poll = now + shard.idle_delay
        shard.iterator = position.next_shard_iterator
        finished = position.next_shard_iterator is None
        if finished:
            # Its children may be read now: after its last records, in the same group or later.
            shard.finished = True
            f.graph_stale = True
        return Read(f, shard, body, position) if position.records or finished else None

    def _promote(self, f: Followed) -> None:
        """Once the load is done, apply the changes kept during it, then follow live."""
        if f.phase == "following":
            return
        f.phase = state.phase(self.conn, self.cfg.state_schema, f.table.table_name) or "loading"
        if f.phase == "loaded":
            self._drain(f)
            state.set_phase(self.conn, self.cfg.state_schema, f.table.table_name, "following")
            f.phase = "following"

    def _commit(self, group: list[Read]) -> None:
        """Apply (or, while its table loads, keep) what a group read, each table in a transaction
        with the checkpoints of its shards."""
        schema = self.cfg.state_schema
        for f in _distinct(r.f for r in group):
            reads = [r for r in group if r.f is f]
            # The phase is decided now for all of them: the changes kept during the load are
            # applied before any read after them.
            self._promote(f)
            then = partial(self._checkpoint, f, reads)
            if f.phase == "loading":
                with self.conn.transaction():
                    for r in reads:
                        if r.position.records:
                            state.keep_change(self.conn, schema, f.table.table_name, r.shard.shard_id, r.body)
                    then()
                continue
            bodies = [r.body for r in reads]
            self._apply_then(f, bodies, self._prepare(f, bodies), then)
            f.applied += sum(r.position.records for r in reads)
            f.last_created = next(
                (r.position.last_created for r in reversed(reads) if r.position.last_created is not None),
                f.last_created,
            )

    def _apply_then(
        self, f: Followed, bodies: list[bytes], batches: list[StreamBatch], then: Callable[[], None]
    ) -> None:
        """One transaction: ``batches`` (of ``bodies``) applied, then ``then`` (what commits with
        them: checkpoints, or the kept changes' removal). A row PostgreSQL cannot store (too big
        for a page, a key too long for its index) refuses the whole batch: the bodies' changes
        are then applied one by one, and what PostgreSQL refuses is rejected."""
        try:
            with self.conn.transaction(), self.conn.cursor() as cur:
                rejects = self._apply(cur, f, bodies, batches)
                then()
        except psycopg.errors.ProgramLimitExceeded as e:
            log.warning("%s: %s; applying those changes one by one", f.table.table_name, " ".join(str(e).split()))
            with self.conn.transaction(), self.conn.cursor() as cur:
                rejects = self._apply_one_by_one(cur, f, bodies)
                then()
        f.rejects += len(rejects)
        for r in rejects:
            log.warning(
                "%s: the change to %s is rejected (kept in %s.rejects): %s",
                f.table.table_name,
                r.key.decode("utf-8", "replace"),
                self.cfg.state_schema,
                r.reason,
            )

    def _apply(
        self, cur: psycopg.Cursor[Any], f: Followed, bodies: list[bytes], batches: list[StreamBatch]
    ) -> list[state.RejectLike]:
        """In the caller's transaction: apply ``batches`` (of ``bodies``) and record their rejects,
        with the layout the registry has now: another process may have added columns since the
        bodies were encoded (the loaders, while the changes waited), and a whole-row upsert must
        set every column, or a value the item no longer has would stay. Returns the rejects."""
        if self.citus:
            citus.one_connection_per_node(cur)
        if f.codec.refresh():
            batches = self._prepare(f, bodies)
        t = f.table
        apply.apply(cur, t.target_schema, t.target_table, f.codec.layout, batches)
        rejects: list[state.RejectLike] = [r for b in batches for r in b.upserts.rejects]
        state.record_rejects(self.conn, self.cfg.state_schema, t.table_name, rejects)
        return rejects

    def _apply_one_by_one(self, cur: psycopg.Cursor[Any], f: Followed, bodies: list[bytes]) -> list[state.RejectLike]:
        """In the caller's transaction: each record of ``bodies`` alone, in order, each in a
        savepoint of its own (one at a time in order ends where the collapsed batch does). A
        change PostgreSQL refuses is rejected, and its key's row, of an older image, deleted:
        a rejected item has no row, as after a load."""
        rejects: list[state.RejectLike] = []
        key_names = [a for a, _ in f.table.keys]
        for received in (record for body in bodies for record in orjson.loads(body)["Records"]):
            keys = received["dynamodb"]["Keys"]
            record = received
            if record["eventName"] != "REMOVE" and "NewImage" not in record["dynamodb"]:
                # Its item as it is now, as the batch would have fetched it.
                record = orjson.loads(self._fetch(f, (orjson.dumps(keys),)))["Records"][0]
            one = [orjson.dumps({"Records": [record]})]
            try:
                with self.conn.transaction():
                    rejects += self._apply(cur, f, one, self._prepare(f, one))
            except psycopg.errors.ProgramLimitExceeded as e:
                item = orjson.dumps(record["dynamodb"].get("NewImage", keys))
                refused = state.Refused.by_postgres(orjson.dumps({k: keys[k] for k in key_names if k in keys}), item, e)
                gone = [orjson.dumps({"Records": [{"eventName": "REMOVE", "dynamodb": {"Keys": keys}}]})]
                rejects += self._apply(cur, f, gone, self._prepare(f, gone))
                state.record_rejects(self.conn, self.cfg.state_schema, f.table.table_name, [refused])
                rejects.append(refused)
        return rejects

    def _prepare(self, f: Followed, bodies: list[bytes]) -> list[StreamBatch]:
        """Encode bodies, adding columns until none is missing, and fetch the items a stream
        without new images only names (KEYS_ONLY, OLD_IMAGE)."""
        batch = f.codec.records(bodies)
        batches = [batch]
        if batch.fetch:
            batches.append(f.codec.records([self._fetch(f, batch.fetch)]))
        return batches

    def _fetch(self, f: Followed, keys: tuple[bytes, ...]) -> bytes:
        """Read the current items of ``keys``; returns a GetRecords-shaped body of INSERT records
        for the items found and REMOVE records for the keys that are gone."""
        wanted = [orjson.loads(k) for k in keys]
        found: dict[bytes, Any] = {}
        name = f.table.table_name
        key_names = [a for a, _ in f.table.keys]
        # Keys left unprocessed (the table's capacity ran out) are asked again, after a while.
        unprocessed = retry.Backoff(0.05, 2.0)
        for start in range(0, len(wanted), 100):
            pending = wanted[start : start + 100]
            while pending:
                try:
                    response = orjson.loads(self.dynamo.batch_get(name, pending))
                except orjson.JSONDecodeError as e:
                    raise BodyError(f"unreadable BatchGetItem answer: {e}") from None
                for item in response.get("Responses", {}).get(name, []):
                    found[orjson.dumps({k: item[k] for k in key_names})] = item
                pending = response.get("UnprocessedKeys", {}).get(name, {}).get("Keys", [])
                if pending:
                    unprocessed.sleep()
        records = []
        for key in wanted:
            item = found.get(orjson.dumps({k: key[k] for k in key_names}))
            if item is None:
                records.append({"eventName": "REMOVE", "dynamodb": {"Keys": key}})
            else:
                records.append({"eventName": "INSERT", "dynamodb": {"Keys": key, "NewImage": item}})
        return orjson.dumps({"Records": records, "NextShardIterator": "fetched"})

    def _drain(self, f: Followed) -> None:
        """Apply the changes kept while the table loaded, in the order they were read, many in a
        transaction."""
        schema = self.cfg.state_schema
        while changes := state.next_changes(self.conn, schema, f.table.table_name, GROUP_BYTES):
            ids = [change_id for change_id, _ in changes]
            bodies = [body for _, body in changes]
            self._apply_then(f, bodies, self._prepare(f, bodies), partial(state.drop_changes, self.conn, schema, ids))
            for body in bodies:
                position = stream_position(body)
                f.applied += position.records
                if position.last_created is not None:
                    f.last_created = position.last_created

    def _checkpoint(self, f: Followed, reads: list[Read]) -> None:
        """Where each shard of ``reads`` (one table's, in the order read) now stands."""
        for shard in _distinct(r.shard for r in reads):
            mine = [r.position for r in reads if r.shard is shard]
            for p in mine:
                if p.last_sequence_number is not None:
                    shard.last_sequence = p.last_sequence_number
            created = [p.last_created for p in mine if p.last_created is not None]
            finished = mine[-1].next_shard_iterator is None
            checkpoint = state.ShardCheckpoint(shard.shard_id, shard.parent, shard.last_sequence, finished)
            state.checkpoint_shard(
                self.conn,
                self.cfg.state_schema,
                f.table.table_name,
                f.stream_arn,
                checkpoint,
                records=sum(p.records for p in mine),
                last_created=created[-1] if created else None,
            )


def _distinct(objects: Iterable[T]) -> list[T]:
    """``objects`` without repeats, in their order, by identity."""
    return list({id(o): o for o in objects}.values())


def _new_stream_message(name: str, old: str | None, new: str | None) -> str:
    return (
        f"table {name!r}: its stream changed ({old} → {new}); the stream was disabled or replaced, so changes "
        f"may have been lost. Re-migrate the table: drop it and its row in the state schema's tables, then "
        f"run migrate --follow again"
    )
