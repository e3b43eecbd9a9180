"""Every connection's network and lock timeouts: ours by default, the user's where they set one."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from podyn_fast.postgres import connect, liveness


def _setting(conn: object, keyword: str) -> str | None:
    for option in conn.pgconn.info:  # type: ignore[attr-defined]
        if option.keyword == keyword.encode():
            return option.val.decode() if option.val is not None else None
    raise KeyError(keyword)


def test_defaults_reach_libpq_and_the_session(pg_dsn: str) -> None:
    with connect.connect(pg_dsn, "podyn-fast test") as conn:
        for keyword, value in liveness.NETWORK_DEFAULTS.items():
            assert _setting(conn, keyword) == value
        assert conn.execute("SHOW lock_timeout").fetchone() == ("1min",)
        assert conn.watch is not None and conn.watch[1][0] == conn.info.backend_pid


def test_the_users_settings_win(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "7")
    url = make_conninfo(pg_dsn, keepalives_idle="5", tcp_user_timeout="1234", options="-c lock_timeout=3s")
    with connect.connect(url, "podyn-fast test") as conn:
        assert _setting(conn, "keepalives_idle") == "5"
        assert _setting(conn, "tcp_user_timeout") == "1234"
        assert _setting(conn, "connect_timeout") == "7"
        assert _setting(conn, "keepalives_count") == liveness.NETWORK_DEFAULTS["keepalives_count"]
        assert conn.execute("SHOW lock_timeout").fetchone() == ("3s",)


def test_a_statement_waiting_on_a_lock_fails_and_is_recoverable(pg_dsn: str, pg_schema: str) -> None:
    url = make_conninfo(pg_dsn, options="-c lock_timeout=200ms")
    table = sql.Identifier(pg_schema, "locked")
    with connect.connect(pg_dsn, "holder") as holder, connect.connect(url, "waiter") as waiter:
        holder.execute(sql.SQL("CREATE TABLE {} (k int)").format(table))
        with holder.transaction():
            holder.execute(sql.SQL("LOCK TABLE {}").format(table))
            with pytest.raises(psycopg.errors.LockNotAvailable) as caught:
                waiter.execute(sql.SQL("SELECT * FROM {}").format(table))
            assert connect.recoverable(waiter, caught.value)
            assert connect.recover(waiter, caught.value, url, "waiter") is waiter
        assert waiter.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone() == (0,)
