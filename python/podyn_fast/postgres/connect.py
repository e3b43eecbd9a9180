"""Connections that ride out a PostgreSQL restart, failover or network drop, and never wait
forever (postgres/liveness.py)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from datetime import datetime
from typing import Any

import psycopg

from podyn_fast import retry
from podyn_fast.errors import UnsupportedDatabase
from podyn_fast.postgres import liveness
from podyn_fast.postgres.liveness import WatchedConnection

log = logging.getLogger("podyn_fast")

# How long a loader or follower keeps trying to reconnect before it gives up.
RECONNECT_FOR = 600.0


def connect(url: str, application_name: str) -> WatchedConnection:
    """An autocommit connection (callers open their transactions explicitly) with the network
    and lock timeouts of postgres/liveness.py, its waits watched."""
    conn = WatchedConnection.connect(liveness.conninfo(url), autocommit=True, application_name=application_name)
    encoding, dbname = conn.info.parameter_status("server_encoding"), conn.info.dbname
    if encoding != "UTF8":
        conn.close()
        raise UnsupportedDatabase(
            f"database {dbname!r} is in encoding {encoding}, not UTF8: DynamoDB strings are Unicode, which it "
            f"cannot hold exactly; create the database with ENCODING 'UTF8' and migrate into it"
        )
    liveness.watch(conn, url)
    return conn


def reconnect(
    old: WatchedConnection,
    error: psycopg.OperationalError,
    url: str,
    application_name: str,
    stop: threading.Event | None = None,
) -> WatchedConnection:
    """A new connection after ``old`` broke, tried with backoff for up to RECONNECT_FOR seconds,
    with ``old``'s session ended if the server still has it; raises ``error`` when it cannot
    connect (or when ``stop`` is set meanwhile)."""
    log.warning("lost the PostgreSQL connection (%s); reconnecting", " ".join(str(error).split()))
    # After a network drop the server may keep the old session, its transaction and its locks (a
    # follower's table lock) for as long as TCP takes to notice: that session is ended below.
    session = old.watch[1] if old.watch else None
    with contextlib.suppress(psycopg.Error):
        old.close()
    conn = _connect_patiently(url, application_name, stop, error)
    if session is not None:
        _end_session(conn, session)
    log.warning("reconnected to PostgreSQL")
    return conn


def connect_patiently(url: str, application_name: str) -> WatchedConnection:
    """``connect``, tried again with backoff for up to RECONNECT_FOR seconds while PostgreSQL
    cannot be reached: for processes that join a run already under way (a loader starting while
    the server restarts). A command's first connection fails at once instead, so that a wrong URL
    is said at once."""
    try:
        return connect(url, application_name)
    except psycopg.OperationalError as e:
        log.warning("cannot connect to PostgreSQL (%s); trying again", " ".join(str(e).split()))
        conn = _connect_patiently(url, application_name, None, e)
        log.warning("connected to PostgreSQL")
        return conn


def _connect_patiently(
    url: str, application_name: str, stop: threading.Event | None, error: psycopg.OperationalError
) -> WatchedConnection:
    backoff = retry.Backoff(0.5, 10.0)
    while True:
        if backoff.sleep(stop):
            raise error
        try:
            return connect(url, application_name)
        except psycopg.OperationalError:
            if backoff.failing_for() > RECONNECT_FOR:
                raise error from None


# The pair (pid, start time) tells that session from a later one reusing the pid.
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


def end_sessions(conn: psycopg.Connection[Any], application_prefix: str) -> int:
    """End the sessions of this database whose application_name starts with ``application_prefix``
    (a lease holder whose leases ran out: its open transaction rolls back, and its locks, which
    would hold up the rows of whoever takes its segments over, go with it); returns how many.
    Without the right to (another role's sessions), says so and ends none."""
    matching = (
        "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        " AND left(application_name, length(%(p)s)) = %(p)s"
    )
    try:
        ended = conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) " + matching, {"p": application_prefix}
        ).fetchone()
    except psycopg.errors.InsufficientPrivilege as e:
        log.warning(
            "cannot end the sessions of %r (%s): until they end, their uncommitted rows hold up the same rows here",
            application_prefix,
            " ".join(str(e).split()),
        )
        return 0
    # Gone for sure (locks released) before the caller goes on, within a few seconds.
    for _ in range(50):
        if conn.execute("SELECT 1 " + matching + " LIMIT 1", {"p": application_prefix}).fetchone() is None:
            break
        time.sleep(0.1)
    return int(ended[0]) if ended else 0


def recoverable(conn: psycopg.Connection[Any], error: BaseException) -> bool:
    """Whether work that failed with ``error`` can go on from its last commit: the connection
    broke (PostgreSQL restarted, failed over, the network dropped), or a statement waited longer
    than the lock timeout."""
    return isinstance(error, psycopg.OperationalError) and (
        conn.broken or isinstance(error, psycopg.errors.LockNotAvailable)
    )


def recover(
    conn: WatchedConnection,
    error: psycopg.OperationalError,
    url: str,
    application_name: str,
    stop: threading.Event | None = None,
) -> WatchedConnection:
    """The connection to go on with from the last commit after ``error``: a new one when the old
    one broke, the same one after a lock timeout; an error that is not ``recoverable`` is raised."""
    if not recoverable(conn, error):
        raise error
    if conn.broken:
        return reconnect(conn, error, url, application_name, stop)
    log.warning("waited too long for a lock another session holds (%s); trying again", " ".join(str(error).split()))
    return conn


def usable(conn: WatchedConnection, url: str, application_name: str) -> WatchedConnection:
    """``conn`` if it still works, else a new one (it sat idle while PostgreSQL restarted)."""
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError as e:
        return recover(conn, e, url, application_name)
    return conn
