"""Connections that ride out a PostgreSQL restart, failover or network drop."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from datetime import datetime
from typing import Any

import psycopg

log = logging.getLogger("podyn_fast")

# How long a loader or follower keeps trying to reconnect before it gives up.
RECONNECT_FOR = 600.0

# Each connection's server session (backend pid, start time): after a network drop the server may
# keep the old session, its transaction and its locks (a follower's table lock) for as long as
# TCP takes to notice, hours by default. The pair tells that session from a later one reusing the pid.
_sessions: weakref.WeakKeyDictionary[psycopg.Connection[Any], tuple[int, datetime]] = weakref.WeakKeyDictionary()


def connect(url: str, application_name: str) -> psycopg.Connection[Any]:
    """An autocommit connection: callers open their transactions explicitly."""
    conn = psycopg.connect(url, autocommit=True, application_name=application_name)
    row = conn.execute("SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()").fetchone()
    if row is not None and row[1] is not None:
        _sessions[conn] = (int(row[0]), row[1])
    return conn


def reconnect(
    old: psycopg.Connection[Any],
    error: psycopg.OperationalError,
    url: str,
    application_name: str,
    stop: threading.Event | None = None,
) -> psycopg.Connection[Any]:
    """A new connection after ``old`` broke, tried with backoff for up to RECONNECT_FOR seconds,
    with ``old``'s session ended if the server still has it; raises ``error`` when it cannot
    connect (or when ``stop`` is set meanwhile)."""
    log.warning("lost the PostgreSQL connection (%s); reconnecting", " ".join(str(error).split()))
    session = _sessions.pop(old, None)
    with contextlib.suppress(psycopg.Error):
        old.close()
    stop = stop or threading.Event()
    started, delay = time.monotonic(), 0.5
    while True:
        if stop.wait(delay):
            raise error
        try:
            conn = connect(url, application_name)
        except psycopg.OperationalError:
            if time.monotonic() - started > RECONNECT_FOR:
                raise error from None
            delay = min(delay * 2, 10.0)
            continue
        if session is not None:
            _end_session(conn, session)
        log.warning("reconnected to PostgreSQL")
        return conn


_THAT_SESSION = "FROM pg_stat_activity WHERE pid = %s AND backend_start = %s"


def _end_session(conn: psycopg.Connection[Any], session: tuple[int, datetime]) -> None:
    """End the old session if it lingers (same pid and start time: never another one's)."""
    with contextlib.suppress(psycopg.Error):
        if conn.execute("SELECT pg_terminate_backend(pid) " + _THAT_SESSION, list(session)).fetchone() is None:
            return
        log.warning("ending the previous session (pid %d), which the server still held", session[0])
        # Gone for sure (its locks released) before the caller goes on, within a few seconds.
        for _ in range(50):
            if conn.execute("SELECT 1 " + _THAT_SESSION, list(session)).fetchone() is None:
                return
            time.sleep(0.1)


def usable(conn: psycopg.Connection[Any], url: str, application_name: str) -> psycopg.Connection[Any]:
    """``conn`` if it still works, else a new one (it sat idle while PostgreSQL restarted)."""
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError as e:
        if not conn.broken:
            raise
        return reconnect(conn, e, url, application_name)
    return conn
