"""The tables of the source: ListTables, and DescribeTable read into what migrate plans from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from podyn_fast.dynamo.client import RawDynamo
from podyn_fast.errors import MigrateError

if TYPE_CHECKING:
    from podyn_fast.dynamo.exports import Manifest


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
    """The stream that records the table's changes now, if one does."""
    arn: str = ""
    export: Manifest | None = None
    """The export in S3 its rows are loaded from instead of a Scan (a segment per data file)."""


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
    stream = description.get("StreamSpecification", {})
    return SourceTable(
        name=description["TableName"],
        keys=keys_of(description["KeySchema"]),
        indexes=indexes,
        item_count=int(description.get("ItemCount", 0)),
        size_bytes=int(description.get("TableSizeBytes", 0)),
        on_demand=billing == "PAY_PER_REQUEST",
        # A stream turned off keeps its ARN in LatestStreamArn, and records nothing.
        stream_arn=description.get("LatestStreamArn") if stream.get("StreamEnabled") else None,
        arn=str(description.get("TableArn", "")),
    )


def describe(dynamo: RawDynamo, name: str) -> SourceTable:
    try:
        return source_table(dynamo.client.describe_table(TableName=name)["Table"])
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            where = dynamo.client.meta.region_name
            raise MigrateError(f"DynamoDB table {name!r} not found (region {where})") from None
        raise


def list_tables(dynamo: RawDynamo) -> list[str]:
    names: list[str] = []
    kwargs: dict[str, Any] = {}
    while True:
        page = dynamo.client.list_tables(**kwargs)
        names += page.get("TableNames", [])
        if "LastEvaluatedTableName" not in page:
            return names
        kwargs["ExclusiveStartTableName"] = page["LastEvaluatedTableName"]
