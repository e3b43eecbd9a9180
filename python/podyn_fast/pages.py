"""Encoding a body while the table's columns grow: the loop every reader of items shares."""

from __future__ import annotations

from collections.abc import Callable

from podyn_fast._core import Encoded, Layout
from podyn_fast.errors import LayoutError

# Registers planned columns (attribute, column type, column name) and returns the layout that
# now has them; the registry may have named them differently if another worker got there first.
Register = Callable[[list[tuple[str, str, str]]], Layout]


def encode_evolving(layout: Layout, body: bytes, register: Register, *, item: bool = False) -> tuple[Layout, Encoded]:
    """Encode ``body`` (a Scan page, or one item with ``item=True``), adding columns until none is
    missing. Returns the layout that encoded it and the result."""
    encode = Layout.encode_item if item else Layout.encode_scan_page
    encoded = encode(layout, body)
    while encoded.unknown:
        planned = layout.plan_columns(list(encoded.unknown))
        new_layout = register(planned)
        if len(new_layout.columns) <= len(layout.columns):
            raise LayoutError(f"registering columns {planned} did not add them to the layout")
        layout = new_layout
        encoded = encode(layout, body)
    return layout, encoded
