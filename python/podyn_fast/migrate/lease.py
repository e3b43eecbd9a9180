"""A loader's leases kept while it works: renewed on a connection of their own, whatever its
transaction is doing.

A loader's transaction stays open while it waits for its next page; a lease renewed only when that
transaction commits would run out under a page slower than the lease (a low ``--scan-rate``,
throttling, a slow network), and another worker would take the segment from a holder still at
work. The keeper renews every lease of its process at a quarter of the lease time, so only a
process that stops (killed, frozen, cut off from PostgreSQL) loses its leases. A loader that shows
no sign of life (no request, page or commit) for ``STALLED_AFTER`` is let go: its leases run out,
and the checkpoint's fence keeps whatever it commits afterwards out.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

import psycopg

from podyn_fast import state
from podyn_fast.postgres import connect
from podyn_fast.secrets import clean

log = logging.getLogger("podyn_fast")

# Every wait of a loader is bounded well below this (a Scan call and its retries, a page paced by
# --scan-rate, a statement under the connection watchdog).
STALLED_AFTER = 1800.0


class LeaseKeeper(threading.Thread):
    def __init__(self, postgres_url: str, schema: str, owner: str, lease_seconds: float, application: str) -> None:
        super().__init__(name="lease keeper", daemon=True)
        self.url, self.schema, self.owner, self.lease_seconds = postgres_url, schema, owner, lease_seconds
        self.application = f"{application} leases"
        self.every = lease_seconds / 4
        self.stopping = threading.Event()
        self.last_sign = time.monotonic()
        self.conn: psycopg.Connection[Any] | None = None

    def alive(self) -> None:
        """The loader made progress: keep its leases."""
        self.last_sign = time.monotonic()

    def run(self) -> None:
        stalled = False
        while not self.stopping.wait(self.every):
            quiet = time.monotonic() - self.last_sign
            if quiet > STALLED_AFTER:
                if not stalled:
                    log.warning("no sign of life from this loader for %.0f s: its leases are left to run out", quiet)
                stalled = True
                continue
            stalled = False
            try:
                if self.conn is None:
                    self.conn = connect.connect(self.url, self.application)
                state.renew(self.conn, self.schema, self.owner, self.lease_seconds)
            except psycopg.Error as e:
                # Tried again at the next turn; the checkpoint's fence guards the rest.
                log.warning("renewing the leases failed (%s); trying again", clean(str(e), self.url))
                self._disconnect()

    def _disconnect(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                self.conn.close()
            self.conn = None

    def close(self) -> None:
        self.stopping.set()
        self.join(timeout=10)
        self._disconnect()
