"""The fast Scan server (tests/servers/scan.py) through botocore: the protocol a DynamoDB client relies on.

Pagination (ListTables, Scan's 1 MB pages, Limit, ExclusiveStartKey, parallel segments), DescribeTable,
errors as DynamoDB words them, ConsumedCapacity, the CRC32 header, and faults that botocore's
standard retries must absorb. Most scans read raw bodies through ``RawDynamo`` (as podyn-fast
does); botocore's parsed client checks what its own parser makes of the answers.
"""

from __future__ import annotations

import http.client
import itertools
import math
import re
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import orjson
import pytest

from podyn_fast import _core
from podyn_fast.dynamo.client import RawDynamo
from tests.fix_scan_server import ALL_TYPES, ALL_TYPES_COUNT, TYPICAL, TYPICAL_COUNT
from tests.servers.scan import (
    PAGE_BYTES,
    TYPICAL_KEYS,
    ScanServer,
    TableSpec,
    all_types_item,
    rich_item,
    typical_item,
)

REGION = "us-east-1"
FAKE = "testing"
ROOT = Path(__file__).resolve().parents[2]
TYPICAL_KEY_SET = {(f"user#{i // 4:08d}", str(i % 4)) for i in range(TYPICAL_COUNT)}


def _client(server: ScanServer, **config: Any) -> Any:
    """botocore's parsed client, the way an application would point it at a local endpoint."""
    return boto3.client(
        "dynamodb",
        endpoint_url=server.endpoint,
        region_name=REGION,
        aws_access_key_id=FAKE,
        aws_secret_access_key=FAKE,
        config=botocore.config.Config(**config),
    )


def _post(server: ScanServer, operation: str, request: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    """One request without botocore, to see the status, headers and body exactly as sent."""
    port = int(server.endpoint.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(
            "POST",
            "/",
            body=orjson.dumps(request),
            headers={"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": f"DynamoDB_20120810.{operation}"},
        )
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def _key(item: dict[str, Any]) -> tuple[str, str]:
    return item["pk"]["S"], item["sk"]["N"]


def _scan_pages(
    raw: RawDynamo, table: str, *, segment: int | None = None, total: int | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """Every page of a (segment's) scan, parsed, following LastEvaluatedKey."""
    pages: list[dict[str, Any]] = []
    start: bytes | None = None
    while True:
        body = raw.scan_page(table, segment=segment, total_segments=total, exclusive_start_key=start, limit=limit)
        page = orjson.loads(body)
        pages.append(page)
        if "LastEvaluatedKey" not in page:
            return pages
        start = orjson.dumps(page["LastEvaluatedKey"])


def _item_bytes(page: dict[str, Any]) -> int:
    # The generators write compact JSON, so re-serialising gives the server's bytes back.
    return sum(len(orjson.dumps(item)) for item in page["Items"])


def _error(call: Any, **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        call(**kwargs)
    response: dict[str, Any] = info.value.response
    return response


# ---------------------------------------------------------------------------------------------
# Item generators


def test_typical_items_are_deterministic_compact_and_about_400_bytes() -> None:
    items = [typical_item(i) for i in range(2_000)]
    assert items == [typical_item(i) for i in range(2_000)]
    assert 380 <= sum(map(len, items)) / len(items) <= 480
    for raw in items:
        doc = orjson.loads(raw)
        assert orjson.dumps(doc) == raw
        assert len(doc) == 12
    assert {tag for raw in items for value in orjson.loads(raw).values() for tag in value} == {
        "S",
        "N",
        "BOOL",
        "SS",
        "M",
    }
    assert len({_key(orjson.loads(raw)) for raw in items}) == len(items)


def _tags(value: Any) -> Iterator[str]:
    ((tag, inner),) = value.items()
    yield tag
    if tag == "L":
        for element in inner:
            yield from _tags(element)
    elif tag == "M":
        for element in inner.values():
            yield from _tags(element)


def test_all_types_items_cover_every_type() -> None:
    docs = [orjson.loads(all_types_item(i)) for i in range(200)]
    assert {tag for doc in docs for value in doc.values() for tag in _tags(value)} == {
        "S",
        "N",
        "B",
        "BOOL",
        "NULL",
        "SS",
        "NS",
        "BS",
        "L",
        "M",
    }
    numbers = {doc["n"]["N"] for doc in docs}
    assert {"-1.5E+3", "1e100", "1E-130", "1" + "0" * 125} <= numbers
    assert any(not doc["s"]["S"].isascii() for doc in docs)
    assert len({_key(doc) for doc in docs}) == len(docs)


def test_rich_items_hold_what_real_items_do_and_encode_without_rejects() -> None:
    raws = [rich_item(i) for i in range(2_000)]
    assert raws == [rich_item(i) for i in range(2_000)]
    assert 700 <= sum(map(len, raws)) / len(raws) <= 900
    docs = [orjson.loads(raw) for raw in raws]
    assert {tag for doc in docs for value in doc.values() for tag in _tags(value)} == {
        "S", "N", "B", "BOOL", "NULL", "SS", "NS", "L", "M",
    }  # fmt: skip
    assert all(len(doc["big"]["N"]) == 38 for doc in docs)
    assert any(b"\\u" in raw for raw in raws) and any(not doc["address"]["S"].isascii() for doc in docs)
    assert len({_key(doc) for doc in docs}) == len(docs)
    body = b'{"Count":2000,"Items":[' + b",".join(raws) + b'],"ScannedCount":2000}'
    first = _core.Layout(TYPICAL_KEYS, _core.key_columns(TYPICAL_KEYS)).encode_scan_page(body)
    columns = [*_core.key_columns(TYPICAL_KEYS), *((a, t, a) for a, t in first.unknown)]
    encoded = _core.Layout(TYPICAL_KEYS, columns).encode_scan_page(body)
    assert (encoded.row_count, encoded.rejects, encoded.unknown) == (2000, (), ())


# ---------------------------------------------------------------------------------------------
# ListTables and DescribeTable


def test_list_tables_pages(fast_dynamo: ScanServer) -> None:
    for n in range(5):
        fast_dynamo.add_table(TableSpec(f"listed_{n}", [("id", "S")], typical_item, 0))
    expected = fast_dynamo.table_names()
    assert len(expected) >= 7
    client = _client(fast_dynamo)

    assert client.list_tables()["TableNames"] == expected
    first = client.list_tables(Limit=2)
    assert first["TableNames"] == expected[:2]
    assert first["LastEvaluatedTableName"] == expected[1]

    names: list[str] = []
    request: dict[str, Any] = {"Limit": 3}
    while True:
        page = client.list_tables(**request)
        names += page["TableNames"]
        if "LastEvaluatedTableName" not in page:
            break
        request["ExclusiveStartTableName"] = page["LastEvaluatedTableName"]
    assert names == expected

    pages = list(client.get_paginator("list_tables").paginate(PaginationConfig={"PageSize": 2}))
    assert [n for page in pages for n in page["TableNames"]] == expected
    assert len(pages) == math.ceil(len(expected) / 2)

    error = _error(client.list_tables, Limit=101)
    assert error["Error"]["Code"] == "ValidationException"


def test_describe_table(fast_dynamo: ScanServer) -> None:
    fast_dynamo.add_table(
        TableSpec(
            "described",
            TYPICAL_KEYS,
            typical_item,
            100,
            gsis=[("by_email", [("email", "S")]), ("by_name_age", [("name", "S"), ("age", "N")])],
            lsis=[("by_created", [("created", "N")])],
            billing=25,
        )
    )
    client = _client(fast_dynamo)
    table = client.describe_table(TableName="described")["Table"]

    assert table["TableName"] == "described"
    assert table["TableStatus"] == "ACTIVE"
    assert table["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert {(d["AttributeName"], d["AttributeType"]) for d in table["AttributeDefinitions"]} == {
        ("pk", "S"),
        ("sk", "N"),
        ("email", "S"),
        ("name", "S"),
        ("age", "N"),
        ("created", "N"),
    }
    assert table["ItemCount"] == 100
    assert table["TableSizeBytes"] == sum(len(typical_item(i)) for i in range(100))
    assert table["TableArn"] == "arn:aws:dynamodb:us-east-1:123456789012:table/described"
    assert table["ProvisionedThroughput"]["ReadCapacityUnits"] == 25
    assert "BillingModeSummary" not in table
    assert "StreamSpecification" not in table
    assert "LatestStreamArn" not in table

    (lsi,) = table["LocalSecondaryIndexes"]
    assert lsi["IndexName"] == "by_created"
    assert lsi["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "created", "KeyType": "RANGE"},
    ]
    assert lsi["Projection"] == {"ProjectionType": "ALL"}
    gsis = {g["IndexName"]: g for g in table["GlobalSecondaryIndexes"]}
    assert set(gsis) == {"by_email", "by_name_age"}
    assert gsis["by_name_age"]["KeySchema"] == [
        {"AttributeName": "name", "KeyType": "HASH"},
        {"AttributeName": "age", "KeyType": "RANGE"},
    ]
    assert all(g["Projection"] == {"ProjectionType": "ALL"} and g["IndexStatus"] == "ACTIVE" for g in gsis.values())

    # On demand, addressed by ARN; a sparse index counts only the items that have its key.
    on_demand = client.describe_table(TableName=f"arn:aws:dynamodb:{REGION}:123456789012:table/{ALL_TYPES}")["Table"]
    assert on_demand["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert on_demand["ItemCount"] == ALL_TYPES_COUNT
    (sparse,) = on_demand["GlobalSecondaryIndexes"]
    assert sparse["ItemCount"] == ALL_TYPES_COUNT // 5


# ---------------------------------------------------------------------------------------------
# Scan


def test_parallel_scan_returns_each_item_once_in_pages_of_at_most_1_mb(fast_dynamo: ScanServer) -> None:
    raw = RawDynamo(endpoint_url=fast_dynamo.endpoint, region=REGION)
    with ThreadPoolExecutor(8) as pool:
        segments = list(pool.map(lambda s: _scan_pages(raw, TYPICAL, segment=s, total=8), range(8)))

    keys = [_key(item) for pages in segments for page in pages for item in page["Items"]]
    assert len(keys) == TYPICAL_COUNT
    assert set(keys) == TYPICAL_KEY_SET

    # Segments split by partition key, unevenly, as DynamoDB's do.
    owner: dict[str, int] = {}
    for segment, pages in enumerate(segments):
        for page in pages:
            for item in page["Items"]:
                assert owner.setdefault(item["pk"]["S"], segment) == segment
    counts = [sum(page["Count"] for page in pages) for pages in segments]
    assert min(counts) > 0
    assert len(set(counts)) > 1

    for pages in segments:
        for page, following in zip(pages, [*pages[1:], None], strict=True):
            assert page["Count"] == page["ScannedCount"] == len(page["Items"])
            size = _item_bytes(page)
            assert size <= PAGE_BYTES
            if following is None:
                assert "LastEvaluatedKey" not in page
            else:
                assert page["LastEvaluatedKey"] == {"pk": page["Items"][-1]["pk"], "sk": page["Items"][-1]["sk"]}
                # Cut at 1 MB, not earlier: the next item would not have fitted.
                assert size + len(orjson.dumps(following["Items"][0])) > PAGE_BYTES
    assert max(len(pages) for pages in segments) >= 2


def _pk_hash(item: dict[str, Any]) -> int:
    return zlib.crc32(item["pk"]["S"].encode())


def test_a_segment_comes_in_the_hash_order_of_its_partition_keys(fast_dynamo: ScanServer) -> None:
    # As DynamoDB serves them, never in key order: a loader inserts at random places of the primary
    # key's btree, which a server in key order would hide from every test and benchmark.
    raw = RawDynamo(endpoint_url=fast_dynamo.endpoint, region=REGION)
    total = 4
    for segment in range(total):
        items = [item for page in _scan_pages(raw, TYPICAL, segment=segment, total=total) for item in page["Items"]]
        hashes = [_pk_hash(item) for item in items]
        assert hashes == sorted(hashes)
        # The segment's share of the hash space is one contiguous range, in order.
        assert all(segment << 32 <= h * total < (segment + 1) << 32 for h in hashes)
        # Items of one partition key by their sort key.
        for a, b in itertools.pairwise(items):
            if a["pk"] == b["pk"]:
                assert int(a["sk"]["N"]) < int(b["sk"]["N"])
        keys = [_key(item) for item in items]
        assert keys != sorted(keys), "a segment in key order"
    whole = [item for page in _scan_pages(raw, TYPICAL, segment=0, total=1) for item in page["Items"]]
    assert [_pk_hash(i) for i in whole] == sorted(_pk_hash(i) for i in whole)


def test_exclusive_start_key_resumes_after_the_key(fast_dynamo: ScanServer) -> None:
    raw = RawDynamo(endpoint_url=fast_dynamo.endpoint, region=REGION)
    expected = [_key(item) for page in _scan_pages(raw, TYPICAL, segment=3, total=8) for item in page["Items"]]
    client = _client(fast_dynamo)

    got: list[tuple[str, str]] = []
    request: dict[str, Any] = {"TableName": TYPICAL, "Segment": 3, "TotalSegments": 8, "Limit": 700}
    while True:
        page = client.scan(**request)
        got += [_key(item) for item in page["Items"]]
        if "LastEvaluatedKey" not in page:
            break
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    assert got == expected

    # Any item's key resumes right after it; a number key compares by value.
    pk, sk = expected[100]
    for number in (sk, f"{sk}.0", f"{sk}E0"):
        page = client.scan(
            TableName=TYPICAL,
            Segment=3,
            TotalSegments=8,
            Limit=5,
            ExclusiveStartKey={"pk": {"S": pk}, "sk": {"N": number}},
        )
        assert [_key(item) for item in page["Items"]] == expected[101:106]

    # A key goes back to the segment that returned it.
    other = next(k for k in TYPICAL_KEY_SET if k not in set(expected))
    error = _error(
        client.scan,
        TableName=TYPICAL,
        Segment=3,
        TotalSegments=8,
        ExclusiveStartKey={"pk": {"S": other[0]}, "sk": {"N": other[1]}},
    )
    assert error["Error"]["Code"] == "ValidationException"

    # Non-ASCII keys through botocore's paginator, which hands back the parsed LastEvaluatedKey.
    pages = list(client.get_paginator("scan").paginate(TableName=ALL_TYPES, PaginationConfig={"PageSize": 150}))
    assert len(pages) == math.ceil(ALL_TYPES_COUNT / 150)
    all_keys = [_key(item) for page in pages for item in page["Items"]]
    assert len(all_keys) == len(set(all_keys)) == ALL_TYPES_COUNT
    assert all(pk.endswith("·ü") for pk, _ in all_keys)


def test_limit_pages(fast_dynamo: ScanServer) -> None:
    fast_dynamo.add_table(TableSpec("ten", TYPICAL_KEYS, typical_item, 10))
    raw = RawDynamo(endpoint_url=fast_dynamo.endpoint, region=REGION)

    assert [page["Count"] for page in _scan_pages(raw, "ten", limit=3)] == [3, 3, 3, 1]
    # A page cut by Limit carries a LastEvaluatedKey even when nothing follows; the next page is
    # empty and ends the scan.
    pages = _scan_pages(raw, "ten", limit=5)
    assert [page["Count"] for page in pages] == [5, 5, 0]
    assert pages[1]["LastEvaluatedKey"] == {"pk": {"S": "user#00000002"}, "sk": {"N": "1"}}
    assert pages[2]["Items"] == []
    assert "LastEvaluatedKey" not in pages[2]
    assert [page["Count"] for page in _scan_pages(raw, "ten", limit=11)] == [10]

    client = _client(fast_dynamo)
    counted = client.scan(TableName="ten", Select="COUNT", Limit=4)
    assert counted["Count"] == counted["ScannedCount"] == 4
    assert "Items" not in counted
    assert counted["LastEvaluatedKey"] == {"pk": {"S": "user#00000000"}, "sk": {"N": "3"}}


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (
            {"Segment": 0},
            "The TotalSegments parameter is required but was not present in the request when Segment parameter "
            "is present",
        ),
        (
            {"TotalSegments": 4},
            "The Segment parameter is required but was not present in the request when parameter TotalSegments "
            "is present",
        ),
        (
            {"Segment": 8, "TotalSegments": 8},
            "The Segment parameter is zero-based and must be less than parameter TotalSegments: Segment: 8 is not "
            "less than TotalSegments: 8",
        ),
        (
            {"Segment": 0, "TotalSegments": 1_000_001},
            "1 validation error detected: Value '1000001' at 'totalSegments' failed to satisfy constraint: Member "
            "must have value less than or equal to 1000000",
        ),
        (
            {"Limit": 0},
            "1 validation error detected: Value '0' at 'limit' failed to satisfy constraint: Member must have "
            "value greater than or equal to 1",
        ),
        (
            {"ExclusiveStartKey": {"pk": {"S": "user#00000000"}}},
            "The provided starting key is invalid: The provided key element does not match the schema",
        ),
        (
            {"ExclusiveStartKey": {"pk": {"S": "user#00000000"}, "sk": {"S": "0"}}},
            "The provided starting key is invalid: The provided key element does not match the schema",
        ),
        ({"ExclusiveStartKey": {"pk": {"S": "nobody"}, "sk": {"N": "0"}}}, "only resumes from the key"),
        ({"FilterExpression": "attribute_exists(pk)"}, "does not support FilterExpression"),
        ({"Select": "SPECIFIC_ATTRIBUTES"}, "does not support Select"),
    ],
)
def test_scan_validation_errors(fast_dynamo: ScanServer, request_: dict[str, Any], message: str) -> None:
    # Limit 0 would be refused by botocore itself; the server must refuse it too.
    client = _client(fast_dynamo, parameter_validation=False)
    error = _error(client.scan, TableName=TYPICAL, **request_)
    assert error["Error"]["Code"] == "ValidationException"
    assert message in error["Error"]["Message"]
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    # Not retryable: botocore gave up at once.
    assert error["ResponseMetadata"]["RetryAttempts"] == 0


def test_unknown_table(fast_dynamo: ScanServer) -> None:
    client = _client(fast_dynamo)
    error = _error(client.scan, TableName="no_such_table")
    assert error["Error"] == {"Code": "ResourceNotFoundException", "Message": "Requested resource not found"}
    error = _error(client.describe_table, TableName="no_such_table")
    assert error["Error"]["Code"] == "ResourceNotFoundException"
    assert error["Error"]["Message"] == "Requested resource not found: Table: no_such_table not found"
    with pytest.raises(botocore.exceptions.ClientError) as info:
        RawDynamo(endpoint_url=fast_dynamo.endpoint, region=REGION, max_attempts=1).scan_page("no_such_table")
    assert info.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_consumed_capacity(fast_dynamo: ScanServer) -> None:
    def scan(**request: Any) -> dict[str, Any]:
        status, _, body = _post(fast_dynamo, "Scan", {"TableName": TYPICAL, **request})
        assert status == 200
        page: dict[str, Any] = orjson.loads(body)
        return page

    page = scan(ReturnConsumedCapacity="TOTAL")
    size = _item_bytes(page)
    assert size > PAGE_BYTES - 1_000
    # Scan charges the page's total size in 4 KB units, half for eventually consistent reads.
    assert page["ConsumedCapacity"] == {"TableName": TYPICAL, "CapacityUnits": math.ceil(size / 4096) * 0.5}
    assert page["ConsumedCapacity"]["CapacityUnits"] == pytest.approx(size / 4096 / 2, abs=0.5)

    strong = scan(ReturnConsumedCapacity="TOTAL", ConsistentRead=True)
    assert strong["ConsumedCapacity"]["CapacityUnits"] == math.ceil(size / 4096)
    indexes = scan(ReturnConsumedCapacity="INDEXES", Limit=1)
    assert indexes["ConsumedCapacity"] == {"TableName": TYPICAL, "CapacityUnits": 0.5, "Table": {"CapacityUnits": 0.5}}
    assert "ConsumedCapacity" not in scan(ReturnConsumedCapacity="NONE", Limit=1)
    assert "ConsumedCapacity" not in scan(Limit=1)

    # Ten items of about 440 bytes: just over 4 KB.
    parsed = _client(fast_dynamo).scan(TableName=TYPICAL, Limit=10, ReturnConsumedCapacity="TOTAL")
    assert parsed["ConsumedCapacity"] == {"TableName": TYPICAL, "CapacityUnits": 1.0}


def test_wire_format(fast_dynamo: ScanServer) -> None:
    status, headers, body = _post(fast_dynamo, "Scan", {"TableName": TYPICAL, "Limit": 3})
    assert status == 200
    assert headers["x-amz-crc32"] == str(zlib.crc32(body))
    assert re.fullmatch(r"[A-Z0-9]{52}", headers["x-amzn-requestid"])
    assert headers["content-type"] == "application/x-amz-json-1.0"
    assert int(headers["content-length"]) == len(body)
    # DynamoDB's (alphabetical) field order, so Items is not last.
    assert list(orjson.loads(body)) == ["Count", "Items", "LastEvaluatedKey", "ScannedCount"]
    first = sorted(
        (typical_item(i) for i in range(TYPICAL_COUNT)),
        key=lambda raw: (_pk_hash(orjson.loads(raw)), int(orjson.loads(raw)["sk"]["N"])),
    )
    assert body.startswith(b'{"Count":3,"Items":[' + first[0] + b"," + first[1])

    # Validation and wire errors come from DynamoDB's framework (Coral), not its API namespace.
    errors: list[tuple[str, dict[str, Any], str]] = [
        ("Scan", {"TableName": "no_such_table"}, "com.amazonaws.dynamodb.v20120810#ResourceNotFoundException"),
        ("Scan", {"TableName": TYPICAL, "Segment": 1}, "com.amazon.coral.validate#ValidationException"),
        ("Scan", {"TableName": TYPICAL, "Limit": "1"}, "com.amazon.coral.service#SerializationException"),
        ("Query", {"TableName": TYPICAL}, "com.amazon.coral.service#UnknownOperationException"),
    ]
    for operation, request, kind in errors:
        status, headers, body = _post(fast_dynamo, operation, request)
        assert status == 400
        assert orjson.loads(body)["__type"] == kind
        assert headers["x-amz-crc32"] == str(zlib.crc32(body))


# ---------------------------------------------------------------------------------------------
# Faults


def test_throttled_scan_completes_with_standard_retries(fast_dynamo: ScanServer) -> None:
    # Three pages keep the test short: botocore backs off throttles by up to 1, 2, 4 … seconds.
    fast_dynamo.add_table(TableSpec("throttled", TYPICAL_KEYS, typical_item, 6_000))
    fast_dynamo.throttle_rate = 0.5
    raw = RawDynamo(endpoint_url=fast_dynamo.endpoint, region=REGION, max_attempts=10)
    pages = _scan_pages(raw, "throttled")
    keys = [_key(item) for page in pages for item in page["Items"]]
    assert len(keys) == len(set(keys)) == 6_000
    stats = fast_dynamo.stats("throttled")
    assert stats.throttles > 0
    assert stats.requests == len(pages) + stats.throttles
    assert stats.items == 6_000


def test_server_errors_and_bad_checksums_are_retried(fast_dynamo: ScanServer) -> None:
    raw = RawDynamo(endpoint_url=fast_dynamo.endpoint, region=REGION, max_attempts=10)
    fast_dynamo.set_faults(error_rate=0.3, crc_error_rate=0.3)
    pages = _scan_pages(raw, TYPICAL)
    keys = [_key(item) for page in pages for item in page["Items"]]
    assert len(keys) == TYPICAL_COUNT
    assert set(keys) == TYPICAL_KEY_SET
    stats = fast_dynamo.stats(TYPICAL)
    assert stats.errors > 0
    assert stats.crc_errors > 0
    assert stats.requests == len(pages) + stats.errors + stats.crc_errors


def test_a_stalled_request_ends_with_its_test(fast_dynamo: ScanServer) -> None:
    # A request stalled by one test used to sleep out its stall and then count in the stats of
    # whichever test ran by then (a suite-order flake of the stats assertions): reset_faults,
    # which ends every test, releases it.
    fast_dynamo.stall(60)
    raw = RawDynamo(endpoint_url=fast_dynamo.endpoint, region=REGION)
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(raw.scan_page, TYPICAL, limit=1)
        time.sleep(0.5)
        assert not answer.done()
        started = time.monotonic()
        fast_dynamo.reset_faults()
        assert orjson.loads(answer.result(timeout=10))["Count"] == 1
        assert time.monotonic() - started < 5


def test_fault_rates_are_checked(fast_dynamo: ScanServer) -> None:
    with pytest.raises(ValueError, match="at most 1"):
        fast_dynamo.set_faults(throttle_rate=0.6, error_rate=0.6)
    with pytest.raises(ValueError, match="latency"):
        fast_dynamo.latency = -1


def test_latency_slows_every_request(fast_dynamo: ScanServer) -> None:
    client = _client(fast_dynamo)
    client.describe_table(TableName=TYPICAL)

    def timed() -> float:
        started = time.perf_counter()
        client.describe_table(TableName=TYPICAL)
        return time.perf_counter() - started

    fast = timed()
    fast_dynamo.latency = 0.3
    slow = timed()
    assert slow >= 0.3
    assert slow - fast >= 0.25


# ---------------------------------------------------------------------------------------------
# Through the core


def test_all_types_pages_encode_without_rejects(fast_dynamo: ScanServer) -> None:
    raw = RawDynamo(endpoint_url=fast_dynamo.endpoint, region=REGION)
    layout = _core.Layout(TYPICAL_KEYS, _core.key_columns(TYPICAL_KEYS))
    rows = pages = 0
    start: bytes | None = None
    while True:
        body = raw.scan_page(ALL_TYPES, exclusive_start_key=start, limit=90)
        encoded = layout.encode_scan_page(body)
        while encoded.unknown:
            layout = layout.with_columns(layout.plan_columns(list(encoded.unknown)))
            encoded = layout.encode_scan_page(body)
        assert encoded.rejects == ()
        assert encoded.row_count == encoded.item_count == encoded.count
        assert encoded.consumed_capacity is not None
        rows += encoded.row_count
        pages += 1
        if encoded.last_evaluated_key is None:
            break
        start = encoded.last_evaluated_key
    assert rows == ALL_TYPES_COUNT
    assert pages == math.ceil(ALL_TYPES_COUNT / 90)
    columns = {(attribute, kind) for attribute, kind, _ in layout.columns}
    # The attribute whose type changes from item to item gets a column per type.
    assert {("mixed", "text"), ("mixed", "numeric"), ("mixed", "boolean")} <= columns
    assert {("b", "bytea"), ("bs", "bytea[]"), ("ns", "numeric[]"), ("l", "jsonb"), ("m", "jsonb")} <= columns


# ---------------------------------------------------------------------------------------------
# Speed and lifecycle


def _tail_key(body: bytes) -> bytes | None:
    """LastEvaluatedKey without parsing the items: it sits between them and ScannedCount."""
    at = body.rfind(b',"LastEvaluatedKey":')
    return None if at < 0 else body[at + len(b',"LastEvaluatedKey":') : body.rfind(b',"ScannedCount":')]


def test_serves_at_least_30000_items_per_second(fast_dynamo: ScanServer) -> None:
    raw = RawDynamo(endpoint_url=fast_dynamo.endpoint, region=REGION)
    raw.scan_page(TYPICAL, limit=1)
    started = time.perf_counter()
    items = 0
    start: bytes | None = None
    while True:
        body = raw.scan_page(TYPICAL, exclusive_start_key=start)
        items += int(body[body.rfind(b'"ScannedCount":') + len(b'"ScannedCount":') : -1])
        start = _tail_key(body)
        if start is None:
            break
    elapsed = time.perf_counter() - started
    assert items == TYPICAL_COUNT
    # Measured ≈700,000 items/s on a 2-core machine: this floor only catches a broken fast path.
    assert items / elapsed >= 30_000, f"{items / elapsed:,.0f} items/s"


def test_stop_ends_idle_keep_alive_connections() -> None:
    server = ScanServer([TableSpec("small", TYPICAL_KEYS, typical_item, 3)])
    server.start()
    assert _post(server, "DescribeTable", {"TableName": "small"})[0] == 200
    port = int(server.endpoint.rsplit(":", 1)[1])
    idle = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    idle.request("GET", "/")
    assert idle.getresponse().read().startswith(b"healthy: dynamodb.")
    started = time.perf_counter()
    server.stop()
    assert time.perf_counter() - started < 2
    idle.close()
    with pytest.raises(RuntimeError):
        server.endpoint  # noqa: B018


def test_runs_as_a_script() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.servers.scan", "--items", "1000", "--latency", "0.01"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        endpoint = line.split()[0]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", endpoint), line
        client = boto3.client(
            "dynamodb", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=FAKE, aws_secret_access_key=FAKE
        )
        assert client.describe_table(TableName="bench")["Table"]["ItemCount"] == 1000
        page = client.scan(TableName="bench", Limit=2)
        assert page["Count"] == 2
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
