"""Binary COPY of rows encoded by the Rust core: header, row chunks, trailer.

The core emits rows without the binary COPY header, so chunks from many pages concatenate into
one COPY; this module frames them. psycopg passes blocks written with ``Copy.write`` through
untouched (in block mode it adds neither signature nor trailer), so we send both.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import psycopg
from psycopg import sql

from podyn_fast._core import COPY_HEADER, COPY_TRAILER


def copy_statement(schema: str, table: str, columns: Sequence[str], *, binary: bool = True) -> sql.Composed:
    """``COPY schema.table (columns) FROM STDIN (FORMAT binary)``, every identifier quoted; in text
    format (psql scripts) without ``binary``."""
    return sql.SQL("COPY {}.{} ({}) FROM STDIN" + (" (FORMAT binary)" if binary else "")).format(
        sql.Identifier(schema),
        sql.Identifier(table),
        sql.SQL(", ").join(sql.Identifier(c) for c in columns),
    )


def copy_rows(
    cursor: psycopg.Cursor[object],
    schema: str,
    table: str,
    columns: Sequence[str],
    chunks: Iterable[bytes],
) -> None:
    """Send encoded row chunks in one binary COPY on ``cursor``'s connection (in its transaction)."""
    with cursor.copy(copy_statement(schema, table, columns)) as copy:
        copy.write(COPY_HEADER)
        for chunk in chunks:
            if chunk:
                copy.write(chunk)
        copy.write(COPY_TRAILER)
