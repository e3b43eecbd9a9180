"""PostgreSQL connections that cannot wait forever.

Every connection gets TCP keepalives and a TCP user timeout (a peer that vanished is noticed in
about a minute, not after the hours TCP takes by default), a connect timeout, and a lock timeout
(a statement queued behind another session's lock fails and is retried instead of waiting for
good); a URL or environment that sets any of these keeps its own value.

Keepalives notice a peer that is gone, but not a path that still answers at the TCP level
while the protocol's bytes are lost: a proxy, load balancer or NAT that kept the client's side of
a flow and forgot the server's. The client then waits for a reply, the server waits for the next
query, and neither ever learns otherwise. So every wait on a watched connection is registered, and
one thread per process asks the server, over a connection of its own, what the session of any
wait older than ``STALL_AFTER`` is doing:

- gone from ``pg_stat_activity``: the server ended it;
- idle (in a transaction or not) for a while: it answered, and the answer was lost;
- active but itself waiting to read from the client, on two checks in a row: each side waits for
  the other, so the bytes between them were lost.

In each case the connection's socket is shut down, the wait fails at once with the usual
``OperationalError`` (the connection broken) and the caller's reconnect-and-resume path takes
over. A session that is running a statement, or waiting on a lock, is left alone: the statement's
own time and ``lock_timeout`` bound those.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

log = logging.getLogger("podyn_fast")

# A wait this long has its session looked up on the server; then again every CHECK_EVERY seconds.
STALL_AFTER = 10.0
CHECK_EVERY = 2.0
# Idle for this long on the server while the client still waits: the answer was lost.
IDLE_FOR = 5.0
# The server waiting to read while the client waits too, on this many checks in a row.
BOTH_WAITING_CHECKS = 2

# libpq's defaults wait for hours on a dead peer: idle 30 s, then 3 probes 10 s apart; data sent
# and not acknowledged for 60 s ends the connection too. Ignored on Unix-domain sockets.
NETWORK_DEFAULTS = {
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
    "tcp_user_timeout": "60000",
    "connect_timeout": "30",
}
# libpq reads these from the environment when the URL does not set them.
_ENVIRONMENT = {"connect_timeout": "PGCONNECT_TIMEOUT"}
# A statement waits this long for a lock before it fails (and the caller retries it).
LOCK_TIMEOUT = "60s"

_LOOKUP = (
    "SELECT state, wait_event, extract(epoch FROM now() - state_change)::float8"
    " FROM pg_stat_activity WHERE pid = %s AND backend_start = %s"
)


def conninfo(url: str) -> str:
    """``url`` with the defaults above that neither it nor the environment sets, and always
    ``client_encoding=UTF8``: the Rust core writes UTF-8, which the server must not convert as if
    it were in another encoding."""
    given = conninfo_to_dict(url)
    added = {
        k: v for k, v in NETWORK_DEFAULTS.items() if k not in given and os.environ.get(_ENVIRONMENT.get(k, "")) is None
    }
    return make_conninfo(url, **added, client_encoding="UTF8")


def watch(conn: WatchedConnection, url: str) -> tuple[int, datetime] | None:
    """Set the lock timeout (unless the URL, the role or the database set one) and start watching
    ``conn``'s waits; returns its session (pid, start time), None where the server hides it."""
    row = conn.execute(
        "SELECT pg_backend_pid(), (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()),"
        " CASE WHEN current_setting('lock_timeout') = '0' THEN set_config('lock_timeout', %s, false) END",
        [LOCK_TIMEOUT],
    ).fetchone()
    if row is None or row[1] is None:
        return None
    session: tuple[int, datetime] = (int(row[0]), row[1])
    conn.watch = (url, session)
    return session


@dataclass(eq=False)
class _Wait:
    """One wait on a connection's socket, in progress."""

    fd: int
    since: float
    session: tuple[int, datetime]
    url: str
    both_waiting: int = 0
    """Consecutive checks that found the server waiting to read from the client."""


class WatchedConnection(psycopg.Connection[Any]):
    """A psycopg connection whose waits the watchdog can see and, when stuck, break."""

    watch: tuple[str, tuple[int, datetime]] | None = None
    """The URL to reach the server by and this connection's session (pid, start), once known."""

    def wait(self, gen: Any, *args: Any, **kwargs: Any) -> Any:
        if self.watch is None:
            return super().wait(gen, *args, **kwargs)
        entry = _watchdog.begin(self.pgconn.socket, *self.watch)
        try:
            return super().wait(gen, *args, **kwargs)
        finally:
            _watchdog.end(entry)


class _Watchdog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waits: set[_Wait] = set()
        self._thread: threading.Thread | None = None
        self._probes: dict[str, psycopg.Connection[Any]] = {}

    def begin(self, fd: int, url: str, session: tuple[int, datetime]) -> _Wait:
        entry = _Wait(fd, time.monotonic(), session, url)
        with self._lock:
            self._waits.add(entry)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="postgres watchdog", daemon=True)
                self._thread.start()
        return entry

    def end(self, entry: _Wait) -> None:
        with self._lock:
            self._waits.discard(entry)

    def _run(self) -> None:
        while True:
            time.sleep(CHECK_EVERY)
            now = time.monotonic()
            with self._lock:
                long = [w for w in self._waits if now - w.since >= STALL_AFTER]
            if not long:
                self._close_probes()
                continue
            for entry in long:
                try:
                    why = self._stuck(entry)
                except Exception as e:  # the watchdog must outlive any one failed look-up
                    log.debug("could not check a long PostgreSQL wait: %s", e)
                    continue
                if why is not None:
                    self._break(entry, why)

    def _stuck(self, entry: _Wait) -> str | None:
        """Why ``entry``'s wait can never end, or None while the server may still answer it."""
        probe = self._probe(entry.url)
        try:
            row = probe.execute(_LOOKUP, list(entry.session)).fetchone()
        except psycopg.Error:
            self._probes.pop(entry.url, None)
            with contextlib.suppress(psycopg.Error):
                probe.close()
            raise
        if row is None:
            return "the server no longer has the session"
        state, wait_event, seconds = row
        if state is not None and state.startswith("idle") and (seconds or 0.0) >= IDLE_FOR:
            return f"the session has been {state} for {seconds:.0f} s, so its answer was lost"
        if state == "active" and wait_event == "ClientRead":
            entry.both_waiting += 1
            if entry.both_waiting >= BOTH_WAITING_CHECKS:
                return "the session is waiting for the client too, so what was sent was lost"
        else:
            entry.both_waiting = 0
        return None

    def _probe(self, url: str) -> psycopg.Connection[Any]:
        probe = self._probes.get(url)
        if probe is None or probe.closed or probe.broken:
            probe = psycopg.connect(conninfo(url), autocommit=True, application_name="podyn-fast watchdog")
            self._probes[url] = probe
        return probe

    def _close_probes(self) -> None:
        probes, self._probes = self._probes, {}
        for probe in probes.values():
            with contextlib.suppress(psycopg.Error):
                probe.close()

    def _break(self, entry: _Wait, why: str) -> None:
        with self._lock:
            if entry not in self._waits:
                return  # it ended meanwhile: its socket may already belong to something else
            waited = time.monotonic() - entry.since
            log.warning(
                "PostgreSQL session %d: no answer for %.0f s and %s; dropping the connection",
                entry.session[0],
                waited,
                why,
            )
            # Shut down through a duplicate of the descriptor: the socket is libpq's to close.
            # The wait in progress then sees the connection end, and fails at once.
            with socket.socket(fileno=os.dup(entry.fd)) as sock, contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            self._waits.discard(entry)


_watchdog = _Watchdog()
