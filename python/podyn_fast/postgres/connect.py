"""Connections that ride out a PostgreSQL restart, failover or network drop."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

import psycopg

log = logging.getLogger("podyn_fast")

# How long a loader or follower keeps trying to reconnect before it gives up.
RECONNECT_FOR = 600.0


def connect(url: str, application_name: str) -> psycopg.Connection[Any]:
    """An autocommit connection: callers open their transactions explicitly."""
    return psycopg.connect(url, autocommit=True, application_name=application_name)


def reconnect(
    old: psycopg.Connection[Any],
    error: psycopg.OperationalError,
    url: str,
    application_name: str,
    stop: threading.Event | None = None,
) -> psycopg.Connection[Any]:
    """A new connection after ``old`` broke, tried with backoff for up to RECONNECT_FOR seconds;
    raises ``error`` when it cannot (or when ``stop`` is set meanwhile)."""
    log.warning("lost the PostgreSQL connection (%s); reconnecting", " ".join(str(error).split()))
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
        log.warning("reconnected to PostgreSQL")
        return conn


def usable(conn: psycopg.Connection[Any], url: str, application_name: str) -> psycopg.Connection[Any]:
    """``conn`` if it still works, else a new one (it sat idle while PostgreSQL restarted)."""
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError as e:
        if not conn.broken:
            raise
        return reconnect(conn, e, url, application_name)
    return conn
