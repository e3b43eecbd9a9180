"""The state schema's own rules, on a real PostgreSQL."""

from __future__ import annotations

import psycopg

from podyn_fast import state


def _table(name: str) -> state.TableState:
    return state.TableState(
        table_name=name,
        target_schema="public",
        target_table=name,
        mode="columns",
        lower_case=False,
        keys=[("pk", "S")],
        indexes=[],
        total_segments=2,
        deferred_primary_key=False,
        phase="loading",
        document_column=None,
    )


def test_phases_only_move_forward(pg_dsn: str, schemas: tuple[str, str]) -> None:
    # Before: a second host finishing its share of a load set a followed table back to `loaded`.
    schema = schemas[1]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        state.ensure_schema(conn, schema)
        state.register_table(conn, schema, _table("t"), [("pk", "text", "pk")], item_count=None, size_bytes=None)
        assert state.phase(conn, schema, "t") == "loading"
        state.set_phase(conn, schema, "t", "loaded")
        assert state.phase(conn, schema, "t") == "loaded"
        state.set_phase(conn, schema, "t", "following")
        for earlier in ("loaded", "loading", "following"):
            state.set_phase(conn, schema, "t", earlier)
            assert state.phase(conn, schema, "t") == "following"
