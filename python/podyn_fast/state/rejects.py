"""Items that cannot be represented (``rejects``): their key, raw JSON and the reason."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from psycopg import sql

from podyn_fast.state.schema import qualified


class RejectLike(Protocol):
    """A rejected item: the Rust core's ``Reject``, or a row PostgreSQL refused."""

    @property
    def key(self) -> bytes: ...
    @property
    def item(self) -> bytes: ...
    @property
    def reason(self) -> str: ...


@dataclass(frozen=True)
class Refused:
    """An item PostgreSQL refused to store (a row too big for a page, a key too long for its
    index), for the rejects as the Rust core's rejects are."""

    key: bytes
    item: bytes
    reason: str

    @classmethod
    def by_postgres(cls, key: bytes, item: bytes, error: psycopg.Error) -> Refused:
        return cls(key, item, "PostgreSQL cannot store this row: " + " ".join(str(error).split()))


def record_rejects(conn: psycopg.Connection[Any], schema: str, table: str, rejects: Sequence[RejectLike]) -> None:
    """Keep rejected items with their raw bytes and reason, in the caller's transaction."""
    if not rejects:
        return
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL("INSERT INTO {} (table_name, key, item, reason) VALUES (%s, %s, %s, %s)").format(
                qualified(schema, "rejects")
            ),
            [(table, r.key.decode("utf-8", "replace"), r.item, r.reason) for r in rejects],
        )
