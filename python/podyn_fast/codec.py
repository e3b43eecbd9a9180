"""The table codec: every path that turns DynamoDB JSON into rows goes through one.

A codec encodes a table's Scan pages and stream records with the layout its column registry has.
Attributes the layout has no column for are given one (``extend``: registered in the state
schema for migrate and follow, planned and printed for the dry run, added to a scratch table for
verify), and the same bytes are encoded again: nothing is ever written with a layout older than
the registry, so a whole-row upsert can never leave behind a value the item no longer has.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg

from podyn_fast import state
from podyn_fast._core import Encoded, Layout, StreamBatch

Unknown = Sequence[tuple[str, str]]
"""Attributes without a column: (attribute, column type)."""


@dataclass
class Page:
    """Source data as read, encoded with the layout that was current when it arrived: a Scan
    response, or whole lines of an export data file (``lines``)."""

    body: bytes
    layout: Layout
    encoded: Encoded
    position: bytes | None
    """Where the segment (or data file) stands once this page is loaded; None at its end."""
    lines: bool = False

    def encode(self, layout: Layout) -> Encoded:
        return layout.encode_export_lines(self.body) if self.lines else layout.encode_scan_page(self.body)

    def items(self) -> list[Any]:
        """The page's items, parsed (for the rare path that stores them one by one)."""
        if self.lines:
            return [orjson.loads(line)["Item"] for line in self.body.splitlines() if line.strip()]
        items: list[Any] = orjson.loads(self.body).get("Items", [])
        return items


class Codec:
    """Encodes one table's DynamoDB JSON; subclasses say how a missing column is made."""

    def __init__(self, table: state.TableState, layout: Layout) -> None:
        self.table = table
        self.layout = layout

    def extend(self, unknown: Unknown) -> None:
        """Give every attribute of ``unknown`` a column, and take the layout that has them."""
        raise NotImplementedError

    def current(self, page: Page) -> Encoded:
        """``page`` as the current layout encodes it (its own encoding, while that layout is the
        current one); ``unknown`` may be non-empty: see ``complete``."""
        return page.encoded if page.layout is self.layout else page.encode(self.layout)

    def complete(self, page: Page) -> Encoded:
        """``page`` encoded with every attribute in a column, extending the layout as needed."""
        encoded = self.current(page)
        while encoded.unknown:
            self.extend(encoded.unknown)
            encoded = page.encode(self.layout)
        return encoded

    def records(self, bodies: Sequence[bytes]) -> StreamBatch:
        """GetRecords bodies (in their order) collapsed per key, with every attribute in a column."""
        batch = self.layout.encode_records(bodies)
        while batch.upserts.unknown:
            self.extend(batch.upserts.unknown)
            batch = self.layout.encode_records(bodies)
        return batch


class RegistryCodec(Codec):
    """The codec of migrate and follow: columns are registered in the state schema, whose registry
    decides their names, so every worker, host and follower agrees."""

    def __init__(
        self,
        connection: Callable[[], psycopg.Connection[Any]],
        schema: str,
        table: state.TableState,
        column_limit: int,
    ) -> None:
        self.connection, self.schema, self.column_limit = connection, schema, column_limit
        super().__init__(table, state.layout(connection(), schema, table))

    def extend(self, unknown: Unknown) -> None:
        conn = self.connection()
        self.table = state.add_columns(conn, self.schema, self.table, unknown, column_limit=self.column_limit)
        self.layout = state.layout(conn, self.schema, self.table)

    def refresh(self) -> bool:
        """In the caller's transaction: take the layout the registry has now if it has grown
        since (another process added columns), and hold it until commit (the row lock keeps
        ``state.add_columns`` out meanwhile). True when the layout changed: encode again."""
        conn = self.connection()
        if state.lock_registry(conn, self.schema, self.table.table_name) == (
            self.layout.document,
            len(self.layout.columns),
        ):
            return False
        found = state.get_table(conn, self.schema, self.table.table_name)
        assert found is not None
        self.table, self.layout = found, state.layout(conn, self.schema, found)
        return True
