"""From DynamoDB's DescribeTable to the target table: keys, index keys, first columns, indexes."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from podyn_fast._core import Layout, column_type, fit_ident, key_columns


@dataclass(frozen=True)
class SourceTable:
    """What DescribeTable says about a table, as far as a load needs it."""

    name: str
    keys: list[tuple[str, str]]
    """Partition key, then the sort key if any: (attribute, S | N | B)."""
    indexes: list[tuple[str, list[tuple[str, str]]]]
    """Every GSI and LSI: (index name, its key attributes)."""
    item_count: int
    size_bytes: int
    on_demand: bool
    stream_arn: str | None


def source_table(description: dict[str, Any]) -> SourceTable:
    """Read a DescribeTable ``Table`` object."""
    types = {d["AttributeName"]: d["AttributeType"] for d in description.get("AttributeDefinitions", [])}

    def keys_of(schema: Sequence[dict[str, str]]) -> list[tuple[str, str]]:
        ordered = sorted(schema, key=lambda k: k["KeyType"] != "HASH")  # HASH first, then RANGE
        return [(k["AttributeName"], types[k["AttributeName"]]) for k in ordered]

    indexes = [
        (ix["IndexName"], keys_of(ix["KeySchema"]))
        for kind in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes")
        for ix in description.get(kind, [])
    ]
    billing = description.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED")
    return SourceTable(
        name=description["TableName"],
        keys=keys_of(description["KeySchema"]),
        indexes=indexes,
        item_count=int(description.get("ItemCount", 0)),
        size_bytes=int(description.get("TableSizeBytes", 0)),
        on_demand=billing == "PAY_PER_REQUEST",
        stream_arn=description.get("LatestStreamArn"),
    )


def initial_columns(source: SourceTable, *, lower_case: bool) -> list[tuple[str, str, str]]:
    """The first registry entries: the key columns, then the key attributes of every index
    (typed from AttributeDefinitions), so the indexes can be built on them."""
    keys = key_columns(source.keys, lower_case=lower_case)
    layout = Layout(source.keys, keys, lower_case=lower_case)
    index_attrs: list[tuple[str, str]] = []
    for _, attrs in source.indexes:
        for attr, ty in attrs:
            pair = (attr, column_type(ty) or "text")
            if pair not in index_attrs:
                index_attrs.append(pair)
    return keys + layout.plan_columns(index_attrs)


def index_name(target_table: str, index: str) -> str:
    """A name unique in the schema and within 63 bytes.

    Index names share one namespace with every table and index of the schema, and
    ``CREATE INDEX IF NOT EXISTS`` silently skips a taken name; ``table_index`` alone is ambiguous
    (``a_b`` + ``c`` vs ``a`` + ``b_c``) and may be a table's ``_pkey``. A hash of the pair keeps
    it unique and deterministic.
    """
    digest = hashlib.sha1(f"{target_table}\x00{index}".encode(), usedforsecurity=False).hexdigest()[:8]
    readable = f"{target_table}_{index}".encode()[: 63 - 9].decode("utf-8", "ignore")
    return f"{readable}_{digest}"


def target_table_name(dynamo_name: str) -> str:
    """The PostgreSQL name of a DynamoDB table: the same, fitted to 63 bytes (DynamoDB allows 255;
    PostgreSQL would cut it silently, and two long names could then land in one table)."""
    return fit_ident(dynamo_name)


def document_column(columns: Sequence[tuple[str, str, str]]) -> str:
    """The jsonb mode's whole-item column: ``data``, unless a key attribute already has that name."""
    taken = {c for _, _, c in columns}
    name, n = "data", 2
    while name in taken:
        name, n = f"data_{n}", n + 1
    return name


def default_segments(source: SourceTable, workers: int) -> int:
    """Enough segments to keep every worker busy and each segment a manageable size (≈ 64 MiB):
    a table of a few GB gets a hundred or so; DynamoDB allows up to 1,000,000."""
    by_size = -(-source.size_bytes // (64 << 20))
    return max(1, min(1000, max(by_size, 4 * workers)))
