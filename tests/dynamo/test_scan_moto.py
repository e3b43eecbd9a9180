"""Parallel Scan over real HTTP (moto server) into PostgreSQL, checked against botocore's own parsing.

moto writes its bodies with json.dumps, so non-ASCII text arrives as \\u escapes (astral characters as
surrogate pairs): the escaped path of the core, over a real HTTP response.
"""

from __future__ import annotations

import base64
import json
import random
from typing import Any

import botocore.exceptions
import orjson
import psycopg
import pytest
from psycopg.rows import TupleRow

from podyn_fast import _core
from podyn_fast.dynamo.client import RawDynamo
from tests import reference
from tests.fix_dynamo import REGION
from tests.moto_migrate import random_value
from tests.reference import STRINGS

TABLE = "events"
SEGMENTS = 4
# Small pages, so every segment takes several requests and follows LastEvaluatedKey.
LIMIT = 7
ITEMS = 300
NUL_ITEMS = 3

NAMES = ["s", "n", "v", "select", 'a"b', "semi;colon", "dot.ted", "with space", "$1", "名前", "😀", "x" * 70]


def _items(rng: random.Random) -> list[dict[str, Any]]:
    items = []
    for i in range(ITEMS):
        # 60 partition keys with 5 sort keys each: segments split by partition key.
        item: dict[str, Any] = {"pk": {"S": f"user#{i // 5}·{STRINGS[i % len(STRINGS)]}"}, "sk": {"N": str(i % 5)}}
        if i % 3 == 0:
            item["g"] = {"S": f"group {i % 7}"}
        for name in rng.sample(NAMES, rng.randrange(0, 6)):
            item[name] = random_value(rng, names=NAMES)
        items.append(item)
    for i in range(NUL_ITEMS):
        # PostgreSQL text cannot hold U+0000: these come back as rejects, not rows.
        items[i * 50 + 1]["s"] = {"S": f"nul\x00{i}"}
    return items


def _wire(typed: dict[str, Any]) -> dict[str, Any]:
    """A value as botocore parsed it (B as bytes) back to wire form (B as base64 text)."""
    ((tag, v),) = typed.items()
    if tag == "B":
        return {"B": base64.b64encode(v).decode("ascii")}
    if tag == "BS":
        return {"BS": [base64.b64encode(x).decode("ascii") for x in v]}
    if tag == "L":
        return {"L": [_wire(x) for x in v]}
    if tag == "M":
        return {"M": {k: _wire(x) for k, x in v.items()}}
    return {tag: v}


def _create_and_fill(dynamodb: Any) -> list[dict[str, Any]]:
    dynamodb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "N"},
            {"AttributeName": "g", "AttributeType": "S"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by_g",
                "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    items = _items(random.Random(20240611))
    for start in range(0, len(items), 25):
        batch = [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
        response = dynamodb.batch_write_item(RequestItems={TABLE: batch})
        assert response["UnprocessedItems"] == {}
    return items


def _key(item: dict[str, Any]) -> tuple[str, str]:
    return item["pk"]["S"], item["sk"]["N"]


def _boto3_scan(dynamodb: Any) -> list[dict[str, Any]]:
    """Every item through botocore's parser: the independent path to compare with."""
    items: list[dict[str, Any]] = []
    for page in dynamodb.get_paginator("scan").paginate(TableName=TABLE):
        items += [{k: _wire(v) for k, v in item.items()} for item in page["Items"]]
    return items


def test_parallel_scan_to_postgres(
    dynamodb: Any, moto_endpoint: str, pg: psycopg.Connection[TupleRow], pg_schema: str
) -> None:
    written = _create_and_fill(dynamodb)
    expected = _boto3_scan(dynamodb)
    assert len(expected) == ITEMS
    assert sorted(map(_key, expected)) == sorted(map(_key, written))

    raw = RawDynamo(endpoint_url=moto_endpoint, region=REGION)
    loader = reference.Loader(pg, pg_schema, TABLE)
    rejects: list[_core.Reject] = []
    items_read = 0
    # The segments' pages interleaved, as parallel workers would deliver them: each segment follows
    # the LastEvaluatedKey that the core read from its previous page.
    next_key: dict[int, bytes | None] = dict.fromkeys(range(SEGMENTS))
    pages_of: dict[int, int] = dict.fromkeys(range(SEGMENTS), 0)
    while next_key:
        for segment, start in list(next_key.items()):
            body = raw.scan_page(
                TABLE, segment=segment, total_segments=SEGMENTS, exclusive_start_key=start, limit=LIMIT
            )
            page = orjson.loads(body)
            encoded = loader.load(body)
            pages_of[segment] += 1
            # The core's bookkeeping agrees with a plain JSON parse of the same body.
            assert encoded.count == page["Count"] == len(page["Items"]) <= LIMIT
            assert encoded.scanned_count == page["ScannedCount"]
            assert encoded.consumed_capacity == page["ConsumedCapacity"]["CapacityUnits"]
            assert encoded.item_count == encoded.row_count + len(encoded.rejects) == page["Count"]
            items_read += encoded.item_count
            rejects += encoded.rejects
            if encoded.last_evaluated_key is None:
                assert "LastEvaluatedKey" not in page
                del next_key[segment]
            else:
                # Only a full page can be followed by another.
                assert page["Count"] == LIMIT
                assert orjson.loads(encoded.last_evaluated_key) == page["LastEvaluatedKey"]
                assert set(page["LastEvaluatedKey"]) == {"pk", "sk"}
                next_key[segment] = encoded.last_evaluated_key
    # Several pages in every segment, so LastEvaluatedKey really was followed.
    assert min(pages_of.values()) >= 3, pages_of

    assert items_read == ITEMS
    nul_items = [item for item in expected if "\x00" in item.get("s", {}).get("S", "")]
    assert len(nul_items) == NUL_ITEMS
    assert sorted(json.loads(r.item)["pk"]["S"] for r in rejects) == sorted(i["pk"]["S"] for i in nul_items)
    assert all("U+0000" in r.reason for r in rejects)
    loaded = [item for item in expected if item not in nul_items]
    assert reference.check_table(pg, pg_schema, TABLE, loader.layout, loaded) == ITEMS - NUL_ITEMS


def test_scan_of_missing_table_raises(dynamodb: Any, moto_endpoint: str) -> None:
    raw = RawDynamo(endpoint_url=moto_endpoint, region=REGION, max_attempts=1)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        raw.scan_page("no_such_table")
    assert info.value.response["Error"]["Code"] == "ResourceNotFoundException"
