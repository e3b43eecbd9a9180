"""The source side of a scan: a segment read page by page, paced to the table's read capacity."""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from podyn_fast import retry
from podyn_fast._core import Layout
from podyn_fast.codec import Page
from podyn_fast.dynamo.client import RawDynamo
from podyn_fast.errors import BodyError, Interrupted

log = logging.getLogger("podyn_fast")

# Unreadable answers (invalid JSON, cut short) for the same page before giving up.
MAX_UNREADABLE = 5
# Pages read ahead of the COPY: enough to hide a network round trip, few enough to bound memory.
READ_AHEAD = 2


class RateLimiter:
    """Paces Scan requests to a table's ``--scan-rate``, shared by every worker holding a lease on
    it: each worker reads at rate / (live leases), charged with the capacity each page consumed."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.share = 1
        self.slowdown = 1.0
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self) -> None:
        if self.rate is None and self.slowdown == 1.0:
            return
        with self._lock:
            delay = self._next - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def charge(self, units: float | None) -> None:
        with self._lock:
            now = time.monotonic()
            if self.rate is not None:
                pace = self.rate / max(self.share, 1) / self.slowdown
                self._next = max(self._next, now) + (units or 1.0) / pace
            elif self.slowdown > 1.0:
                self._next = max(self._next, now) + 0.05 * self.slowdown
            # Throttling lowered the pace; let it recover gradually while pages succeed.
            self.slowdown = max(1.0, self.slowdown * 0.9)

    def throttled(self) -> None:
        with self._lock:
            self.slowdown = min(self.slowdown * 2, 64.0)


@dataclass
class _End:
    """The reader reached the end of the segment, or failed."""

    error: BaseException | None = None


class PageReader(threading.Thread):
    """Reads a unit of work (a Scan segment, an export data file) page by page in a thread of its
    own, encoding each page as it comes, READ_AHEAD pages ahead of the loader that takes them."""

    def __init__(self, name: str, layout: Layout) -> None:
        super().__init__(name=name, daemon=True)
        self.layout = layout  # replaced by the loader when columns are added
        self.pages: queue.Queue[Page | _End] = queue.Queue(READ_AHEAD)
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            self.read()
            self._put(_End())
        except BaseException as e:  # handed to the loader thread, which raises it
            self._put(_End(e))

    def read(self) -> None:
        """Put every page, in order, with ``_put``."""
        raise NotImplementedError

    def _put(self, item: Page | _End) -> None:
        while not self.stopping.is_set():
            try:
                self.pages.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def next_page(self, interrupted: threading.Event | None = None) -> Page | None:
        """The next page, None at the end; ``Interrupted`` as soon as ``interrupted`` is set, even
        while a page is slow to come."""
        while True:
            try:
                item = self.pages.get(timeout=0.2)
                break
            except queue.Empty:
                if interrupted is not None and interrupted.is_set():
                    raise Interrupted(signal.SIGINT) from None
        if isinstance(item, _End):
            if item.error is not None:
                raise item.error
            return None
        return item

    def stop(self, *, wait: bool = True) -> None:
        """Stop reading; with ``wait``, until the request in flight is answered (at most 30 s)."""
        self.stopping.set()
        if wait:
            self.join(timeout=30)


class SegmentReader(PageReader):
    """Reads one segment page by page from ``start_key``."""

    def __init__(
        self,
        dynamo: RawDynamo,
        table: str,
        *,
        segment: int,
        total_segments: int,
        start_key: bytes | None,
        layout: Layout,
        limiter: RateLimiter,
        consistent_read: bool,
        alive: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(f"scan {table}/{segment}", layout)
        self.dynamo, self.table, self.segment, self.total = dynamo, table, segment, total_segments
        self.start_key = start_key
        self.limiter = limiter
        self.consistent_read = consistent_read
        self.alive = alive
        """Called before every request: the segment's holder is at work."""

    def read(self) -> None:
        key = self.start_key
        unreadable = retry.Backoff(0.1, 2.0)
        while not self.stopping.is_set():
            body = self._scan(key)
            layout = self.layout
            try:
                encoded = layout.encode_scan_page(body)
            except BodyError as e:
                # Cut short or garbled on the way, with no CRC to tell: ask again, a few times.
                if unreadable.attempts >= MAX_UNREADABLE:
                    raise BodyError(
                        f"Scan of {self.table} segment {self.segment}: {unreadable.attempts + 1} unreadable "
                        f"answers in a row for the same page ({e})"
                    ) from None
                log.warning("Scan of %s segment %d: unreadable answer (%s); asking again", self.table, self.segment, e)
                unreadable.sleep()
                continue
            unreadable.reset()
            self.limiter.charge(encoded.consumed_capacity)
            self._put(Page(body, layout, encoded, encoded.last_evaluated_key))
            key = encoded.last_evaluated_key
            if key is None:
                break

    def _scan(self, key: bytes | None) -> bytes:
        backoff = retry.Backoff(0.5, 20.0)
        while True:
            self.limiter.wait()
            self.alive()
            try:
                return self.dynamo.scan_page(
                    self.table,
                    segment=self.segment,
                    total_segments=self.total,
                    exclusive_start_key=key,
                    consistent_read=self.consistent_read,
                )
            except retry.AWS_FAILURES as e:
                failure = retry.aws_failure(e)
                if not failure.transient or backoff.failing_for() > failure.give_up_after or self.stopping.is_set():
                    raise
                if failure.throttled:
                    self.limiter.throttled()
                delay = backoff.delay()
                log.warning(
                    "Scan of %s segment %d failed after retries (%s); trying again in %.1f s",
                    self.table,
                    self.segment,
                    e,
                    delay,
                )
                if self.stopping.wait(delay):
                    raise
