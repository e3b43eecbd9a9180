"""The DynamoDB + Streams test server (tests/servers/streams.py) through boto3, as a stream follower sees it.

Record contents per view type, no record for writes that change nothing, shards and their lineage,
DescribeStream pages, iterator positions, expiry and trimming, new streams, BatchGetItem's
unprocessed keys, Scan pages, faults; and a 10,000-change workload whose stream, read parents first
by a reader written here with boto3, rebuilds the table exactly. These test the server, not podyn-fast.
"""

from __future__ import annotations

import base64
import http.client
import random
import re
import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import botocore.exceptions
import orjson
import pytest

from tests.fix_streams_server import client
from tests.servers.streams import PAGE_BYTES, StreamsServer

TABLE = "orders"
Key = tuple[str, str]


def _item(pk: str, sk: int | str, **attrs: dict[str, Any]) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"N": str(sk)}, **attrs}


def _key(pk: str, sk: int | str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"N": str(sk)}}


def _error(call: Any, **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        call(**kwargs)
    error: dict[str, Any] = info.value.response["Error"]
    return error


def _post(server: StreamsServer, target: str, request: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    """One request without botocore, to see the status, headers and body exactly as sent."""
    port = int(server.endpoint.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(
            "POST",
            "/",
            body=orjson.dumps(request),
            headers={"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": target},
        )
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def _shards(streams: Any, arn: str, **request: Any) -> list[dict[str, Any]]:
    """Every shard of the stream, following LastEvaluatedShardId."""
    shards: list[dict[str, Any]] = []
    while True:
        description = streams.describe_stream(StreamArn=arn, **request)["StreamDescription"]
        shards += description["Shards"]
        if "LastEvaluatedShardId" not in description:
            return shards
        request["ExclusiveStartShardId"] = description["LastEvaluatedShardId"]


def _read(streams: Any, arn: str, shard_id: str, kind: str = "TRIM_HORIZON", **position: Any) -> tuple[list[Any], bool]:
    """A shard's records from an iterator of ``kind`` up to its tip; and whether it ended (closed, read out)."""
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard_id, ShardIteratorType=kind, **position)[
        "ShardIterator"
    ]
    records: list[Any] = []
    while True:
        page = streams.get_records(ShardIterator=iterator)
        records += page["Records"]
        iterator = page.get("NextShardIterator")
        if iterator is None:
            return records, True
        if not page["Records"]:
            return records, False


def _all_records(streams: Any, arn: str) -> dict[str, list[Any]]:
    return {s["ShardId"]: _read(streams, arn, s["ShardId"])[0] for s in _shards(streams, arn)}


def _arn(server: StreamsServer) -> str:
    arn = server.stream_arn(TABLE)
    assert arn is not None
    return arn


def _seq(record: dict[str, Any]) -> int:
    return int(record["dynamodb"]["SequenceNumber"])


# ---------------------------------------------------------------------------------------------
# Records


_IMAGES = {
    # view type: (INSERT, MODIFY, REMOVE) as (NewImage?, OldImage?)
    "NEW_AND_OLD_IMAGES": ((True, False), (True, True), (False, True)),
    "NEW_IMAGE": ((True, False), (True, False), (False, False)),
    "OLD_IMAGE": ((False, False), (False, True), (False, True)),
    "KEYS_ONLY": ((False, False), (False, False), (False, False)),
}


@pytest.mark.parametrize("view_type", list(_IMAGES))
def test_record_fields_per_view_type(streams_server: StreamsServer, view_type: str) -> None:
    streams_server.create_table(TABLE, view_type=view_type)
    first = _item("a", 1, v={"N": "1"}, tags={"SS": ["x", "y"]})
    second = _item("a", 1, v={"N": "2"}, doc={"M": {"deep": {"L": [{"NULL": True}, {"B": "AAE="}]}}})
    assert streams_server.put(TABLE, first) == "INSERT"
    assert streams_server.put(TABLE, second) == "MODIFY"
    assert streams_server.update(TABLE, _key("a", 1), set={"w": {"BOOL": True}}, remove=["doc"]) == "MODIFY"
    assert streams_server.delete(TABLE, _key("a", 1)) == "REMOVE"
    third = {**_item("a", 1, v={"N": "2"}), "w": {"BOOL": True}}

    records = [r for shard in _all_records(client(streams_server), _arn(streams_server)).values() for r in shard]
    assert [r["eventName"] for r in records] == ["INSERT", "MODIFY", "MODIFY", "REMOVE"]
    # One item's images before and after each change (botocore hands binary back as bytes).
    parsed = orjson.loads(orjson.dumps(second))
    parsed["doc"]["M"]["deep"]["L"][1]["B"] = b"\x00\x01"
    images = [(None, first), (first, parsed), (parsed, third), (third, None)]
    inserted, modified, removed = _IMAGES[view_type]
    now = time.time()
    for record, (old, new), (has_new, has_old) in zip(
        records, images, [inserted, modified, modified, removed], strict=True
    ):
        assert set(record) == {"eventID", "eventName", "eventVersion", "eventSource", "awsRegion", "dynamodb"}
        assert re.fullmatch(r"[0-9a-f]{32}", record["eventID"])
        assert record["eventVersion"] == "1.1"
        assert record["eventSource"] == "aws:dynamodb"
        assert record["awsRegion"] == "us-east-1"
        data = record["dynamodb"]
        assert data["Keys"] == _key("a", 1)
        assert data["StreamViewType"] == view_type
        assert data["SizeBytes"] > 0
        assert 21 <= len(data["SequenceNumber"]) <= 40
        assert data["SequenceNumber"].isdigit()
        created = data["ApproximateCreationDateTime"].timestamp()
        assert created == int(created)
        assert now - 5 < created <= now
        assert ("NewImage" in data) == has_new
        assert ("OldImage" in data) == has_old
        if has_new:
            assert data["NewImage"] == new
        if has_old:
            assert data["OldImage"] == old
    assert len({r["eventID"] for r in records}) == 4
    assert [_seq(r) for r in records] == sorted(_seq(r) for r in records)


def test_record_wire_format(streams_server: StreamsServer) -> None:
    streams_server.create_table(TABLE, shards=1)
    streams_server.put(TABLE, _item("a", 1, n={"N": "-1.50E+3"}))
    arn = _arn(streams_server)
    streams = client(streams_server)
    (shard,) = _shards(streams, arn)
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")
    status, headers, body = _post(
        streams_server, "DynamoDBStreams_20120810.GetRecords", {"ShardIterator": iterator["ShardIterator"]}
    )
    assert status == 200
    assert headers["x-amz-crc32"] == str(zlib.crc32(body))
    page = orjson.loads(body)
    assert list(page) == ["NextShardIterator", "Records"]
    (record,) = page["Records"]
    assert list(record) == ["awsRegion", "dynamodb", "eventID", "eventName", "eventSource", "eventVersion"]
    assert list(record["dynamodb"]) == [
        "ApproximateCreationDateTime",
        "Keys",
        "NewImage",
        "SequenceNumber",
        "SizeBytes",
        "StreamViewType",
    ]
    # A JSON number in Java's notation (1.7000001E9), not a string; numbers come back normalised.
    assert b'"ApproximateCreationDateTime":1.' in body
    assert isinstance(record["dynamodb"]["ApproximateCreationDateTime"], float)
    assert record["dynamodb"]["NewImage"]["n"] == {"N": "-1500"}
    assert page["NextShardIterator"].startswith(arn + "|1|")


def test_writes_that_change_nothing_make_no_record(streams_server: StreamsServer) -> None:
    streams_server.create_table(TABLE)
    item = _item("a", 1, n={"N": "1.50"}, s={"SS": ["x", "y"]}, m={"M": {"k": {"NS": ["1", "2"]}}})
    assert streams_server.put(TABLE, item) == "INSERT"
    # The same item, written differently: numbers by value, sets in any order.
    same = _item("a", "1.0", n={"N": "15E-1"}, s={"SS": ["y", "x"]}, m={"M": {"k": {"NS": ["2", "1.0"]}}})
    assert streams_server.put(TABLE, same) is None
    assert streams_server.update(TABLE, _key("a", 1), set={"n": {"N": "1.5"}}, remove=["absent"]) is None
    assert streams_server.delete(TABLE, _key("nobody", 1)) is None
    dynamodb = client(streams_server, "dynamodb")
    dynamodb.put_item(TableName=TABLE, Item=same)
    dynamodb.delete_item(TableName=TABLE, Key=_key("nobody", 2))
    assert len(streams_server.records(TABLE)) == 1
    assert streams_server.stats(TABLE).records_written == 1

    assert streams_server.update(TABLE, _key("a", 1), set={"n": {"N": "2"}}) == "MODIFY"
    assert [r["eventName"] for r in streams_server.records(TABLE)] == ["INSERT", "MODIFY"]
    # A table without a stream records nothing, and changes it all the same.
    streams_server.create_table("quiet", view_type=None)
    assert streams_server.put("quiet", _item("a", 1)) is None
    assert streams_server.stream_arn("quiet") is None
    assert list(streams_server.snapshot("quiet")) == [("a", "1")]


def test_records_spread_over_four_shards_by_partition_key(streams_server: StreamsServer) -> None:
    streams_server.create_table(TABLE)
    for i in range(200):
        for sk in (1, 2):
            streams_server.put(TABLE, _item(f"user#{i}", sk, v={"N": "1"}))
        streams_server.update(TABLE, _key(f"user#{i}", 1), set={"v": {"N": "2"}})
        streams_server.delete(TABLE, _key(f"user#{i}", 2))
    streams = client(streams_server)
    arn = _arn(streams_server)
    shards = _shards(streams, arn)
    assert len(shards) == 4
    assert all("ParentShardId" not in s and "EndingSequenceNumber" not in s["SequenceNumberRange"] for s in shards)
    # Each root shard counts from its own magnitude: the numbers differ in length.
    assert len({len(s["SequenceNumberRange"]["StartingSequenceNumber"]) for s in shards}) == 4

    owner: dict[str, str] = {}
    per_key: dict[Key, list[str]] = defaultdict(list)
    for shard_id, records in _all_records(streams, arn).items():
        assert 20 < len(records) < 500
        seqs = [_seq(r) for r in records]
        assert seqs == sorted(set(seqs))
        for record in records:
            keys = record["dynamodb"]["Keys"]
            assert owner.setdefault(keys["pk"]["S"], shard_id) == shard_id
            per_key[keys["pk"]["S"], keys["sk"]["N"]].append(record["eventName"])
    assert len(owner) == 200
    assert all(per_key[f"user#{i}", "1"] == ["INSERT", "MODIFY"] for i in range(200))
    assert all(per_key[f"user#{i}", "2"] == ["INSERT", "REMOVE"] for i in range(200))


# ---------------------------------------------------------------------------------------------
# Shards and lineage


def test_split_lineage_and_describe_stream_pages(streams_server: StreamsServer) -> None:
    streams_server.create_table(TABLE)
    keys = [f"user#{i}" for i in range(100)]
    for pk in keys:
        streams_server.put(TABLE, _item(pk, 0))
    assert len(streams_server.split(TABLE)) == 8
    for pk in keys:
        streams_server.put(TABLE, _item(pk, 1))
    assert len(streams_server.split(TABLE)) == 16
    for pk in keys:
        streams_server.put(TABLE, _item(pk, 2))
    streams = client(streams_server)
    arn = _arn(streams_server)

    streams_server.describe_page_size = 5
    first = streams.describe_stream(StreamArn=arn)["StreamDescription"]
    assert len(first["Shards"]) == 5
    assert first["LastEvaluatedShardId"] == first["Shards"][-1]["ShardId"]
    shards = _shards(streams, arn)
    ids = [s["ShardId"] for s in shards]
    assert len(ids) == len(set(ids)) == 28
    assert [s["ShardId"] for s in _shards(streams, arn, Limit=3)] == ids
    streams_server.describe_page_size = 100
    assert [s["ShardId"] for s in _shards(streams, arn)] == ids

    by_id = {s["ShardId"]: s for s in shards}
    closed = [s for s in shards if "EndingSequenceNumber" in s["SequenceNumberRange"]]
    assert len(closed) == 12
    # Parents come first; every child names a closed parent and counts on from past its end.
    assert ids[:12] == [s["ShardId"] for s in closed]
    for shard in shards[4:]:
        parent = by_id[shard["ParentShardId"]]
        assert "EndingSequenceNumber" in parent["SequenceNumberRange"]
        assert int(shard["SequenceNumberRange"]["StartingSequenceNumber"]) > int(
            parent["SequenceNumberRange"]["EndingSequenceNumber"]
        )
    for parent in closed:
        children = streams.describe_stream(
            StreamArn=arn, ShardFilter={"Type": "CHILD_SHARDS", "ShardId": parent["ShardId"]}
        )["StreamDescription"]["Shards"]
        assert len(children) == 2
        assert {c["ParentShardId"] for c in children} == {parent["ShardId"]}

    # A key's records follow one path down the lineage: sk 0 in a root, 1 in its child, 2 in a grandchild.
    records = _all_records(streams, arn)
    home: dict[tuple[str, str], str] = {}
    for shard_id, shard_records in records.items():
        for record in shard_records:
            written = record["dynamodb"]["Keys"]
            home[written["pk"]["S"], written["sk"]["N"]] = shard_id
    for pk in keys:
        assert by_id[home[pk, "1"]]["ParentShardId"] == home[pk, "0"]
        assert by_id[home[pk, "2"]]["ParentShardId"] == home[pk, "1"]

    # DynamoDB may briefly show a split parent as open while listing its children.
    streams_server.set_faults(hide_shard_ends=True)
    stale = _shards(streams, arn)
    assert sum("EndingSequenceNumber" in s["SequenceNumberRange"] for s in stale) == 0


def test_auto_split_and_rollover(streams_server: StreamsServer) -> None:
    streams_server.create_table(TABLE, shards=1, auto_split_every=10)
    for i in range(35):
        streams_server.put(TABLE, _item("k", i))
    streams = client(streams_server)
    shards = _shards(streams, _arn(streams_server))
    assert len(shards) == 1 + 2 + 4 + 8
    # One child per parent: the routine rollover of an old shard.
    assert len(streams_server.split(TABLE, children=1)) == 8


def test_closed_shard_read_to_its_end_gives_no_next_iterator(streams_server: StreamsServer) -> None:
    streams_server.create_table(TABLE, shards=1)
    for i in range(5):
        streams_server.put(TABLE, _item("k", i))
    streams = client(streams_server)
    arn = _arn(streams_server)
    (root,) = _shards(streams, arn)
    records, ended = _read(streams, arn, root["ShardId"])
    assert (len(records), ended) == (5, False)

    # An open shard with nothing new: no records, and an iterator to come back with.
    latest = streams.get_shard_iterator(StreamArn=arn, ShardId=root["ShardId"], ShardIteratorType="LATEST")
    page = streams.get_records(ShardIterator=latest["ShardIterator"])
    assert page["Records"] == []
    assert "NextShardIterator" in page
    streams_server.put(TABLE, _item("k", 99))
    after = streams.get_records(ShardIterator=page["NextShardIterator"])
    assert [r["dynamodb"]["Keys"]["sk"]["N"] for r in after["Records"]] == ["99"]

    streams_server.split(TABLE)
    # Read one by one: every page but the last has a next iterator; the last records come without one.
    iterator: str | None = streams.get_shard_iterator(
        StreamArn=arn, ShardId=root["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    pages = []
    while iterator is not None:
        page = streams.get_records(ShardIterator=iterator, Limit=2)
        pages.append(len(page["Records"]))
        iterator = page.get("NextShardIterator")
    assert pages == [2, 2, 2]
    records, ended = _read(streams, arn, root["ShardId"])
    assert (len(records), ended) == (6, True)
    # An iterator from before the split, at the tip of the then-open shard, now ends there.
    page = streams.get_records(ShardIterator=after["NextShardIterator"])
    assert page["Records"] == []
    assert "NextShardIterator" not in page
    # LATEST of a closed shard is its end.
    assert _read(streams, arn, root["ShardId"], "LATEST") == ([], True)


def test_sequence_number_positions(streams_server: StreamsServer) -> None:
    streams_server.create_table(TABLE, shards=1)
    for i in range(6):
        streams_server.put(TABLE, _item("k", i))
    streams = client(streams_server)
    arn = _arn(streams_server)
    (shard,) = _shards(streams, arn)
    records, _ = _read(streams, arn, shard["ShardId"])
    seqs = [r["dynamodb"]["SequenceNumber"] for r in records]

    def sks(kind: str, seq: str) -> list[str]:
        got, _ = _read(streams, arn, shard["ShardId"], kind, SequenceNumber=seq)
        return [r["dynamodb"]["Keys"]["sk"]["N"] for r in got]

    assert sks("AT_SEQUENCE_NUMBER", seqs[2]) == ["2", "3", "4", "5"]
    assert sks("AFTER_SEQUENCE_NUMBER", seqs[2]) == ["3", "4", "5"]
    assert sks("AT_SEQUENCE_NUMBER", seqs[0]) == [str(i) for i in range(6)]
    assert sks("AFTER_SEQUENCE_NUMBER", seqs[-1]) == []
    # A number in the shard's range positions at the next record; one beyond it is refused.
    assert sks("AT_SEQUENCE_NUMBER", str(int(seqs[2]) + 1)) == ["3", "4", "5"]
    beyond = str(int(seqs[-1]) + 10**6)
    error = _error(
        streams.get_shard_iterator,
        StreamArn=arn,
        ShardId=shard["ShardId"],
        ShardIteratorType="AT_SEQUENCE_NUMBER",
        SequenceNumber=beyond,
    )
    assert error["Code"] == "ValidationException"
    error = _error(
        streams.get_shard_iterator, StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="AFTER_SEQUENCE_NUMBER"
    )
    assert error["Code"] == "ValidationException"
    # AT_TIMESTAMP: now or earlier finds the records; the future is refused.
    assert len(_read(streams, arn, shard["ShardId"], "AT_TIMESTAMP", Timestamp=time.time() - 60)[0]) == 6
    error = _error(
        streams.get_shard_iterator,
        StreamArn=arn,
        ShardId=shard["ShardId"],
        ShardIteratorType="AT_TIMESTAMP",
        Timestamp=time.time() + 3600,
    )
    assert error["Code"] == "ValidationException"


def test_iterators_expire(streams_server: StreamsServer) -> None:
    streams_server.create_table(TABLE, shards=1)
    streams_server.put(TABLE, _item("k", 0))
    streams = client(streams_server)
    arn = _arn(streams_server)
    (shard,) = _shards(streams, arn)

    def iterator() -> str:
        it: str = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")[
            "ShardIterator"
        ]
        return it

    old = iterator()
    streams_server.advance_clock(899)
    page = streams.get_records(ShardIterator=old)
    assert len(page["Records"]) == 1
    streams_server.advance_clock(2)
    error = _error(streams.get_records, ShardIterator=old)
    assert error["Code"] == "ExpiredIteratorException"
    # The iterator each GetRecords returns is new: its 15 minutes start then.
    assert streams.get_records(ShardIterator=page["NextShardIterator"])["Records"] == []

    streams_server.iterator_ttl = 0.2
    fresh = iterator()
    time.sleep(0.3)
    assert _error(streams.get_records, ShardIterator=fresh)["Code"] == "ExpiredIteratorException"
    # The recovery: a new iterator after the last sequence number processed.
    seq = page["Records"][0]["dynamodb"]["SequenceNumber"]
    recovered = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=seq
    )["ShardIterator"]
    assert streams.get_records(ShardIterator=recovered)["Records"] == []


def test_trimmed_records_cannot_be_read(streams_server: StreamsServer) -> None:
    streams_server.create_table(TABLE, shards=1)
    for i in range(10):
        streams_server.put(TABLE, _item("k", i))
    streams = client(streams_server)
    arn = _arn(streams_server)
    (root,) = _shards(streams, arn)
    records, _ = _read(streams, arn, root["ShardId"])
    seqs = [r["dynamodb"]["SequenceNumber"] for r in records]
    horizon = streams.get_shard_iterator(StreamArn=arn, ShardId=root["ShardId"], ShardIteratorType="TRIM_HORIZON")

    assert streams_server.trim(TABLE, before_sequence=seqs[4], shard_id=root["ShardId"]) == 4
    assert _error(streams.get_records, ShardIterator=horizon["ShardIterator"])["Code"] == "TrimmedDataAccessException"
    for kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
        error = _error(
            streams.get_shard_iterator,
            StreamArn=arn,
            ShardId=root["ShardId"],
            ShardIteratorType=kind,
            SequenceNumber=seqs[2],
        )
        assert error["Code"] == "TrimmedDataAccessException"
    # TRIM_HORIZON now starts at the oldest record left; the number just before the trim point is
    # trimmed, so AFTER it is still readable.
    assert [r["dynamodb"]["SequenceNumber"] for r in _read(streams, arn, root["ShardId"])[0]] == seqs[4:]
    assert len(_read(streams, arn, root["ShardId"], "AFTER_SEQUENCE_NUMBER", SequenceNumber=seqs[3])[0]) == 6

    # A closed shard trimmed empty vanishes; its children still name it as their parent.
    streams_server.split(TABLE)
    assert streams_server.trim(TABLE, before_seconds_ago=0, drop_trimmed_shards=True) == 6
    shards = _shards(streams, arn)
    assert len(shards) == 2
    assert {s["ParentShardId"] for s in shards} == {root["ShardId"]}
    error = _error(streams.get_shard_iterator, StreamArn=arn, ShardId=root["ShardId"], ShardIteratorType="TRIM_HORIZON")
    assert error["Code"] == "ResourceNotFoundException"

    # Retention: records older than 24 hours go by themselves, and so do shards closed that long ago.
    for i in range(20):
        streams_server.put(TABLE, _item(f"later{i}", i))
    streams_server.split(TABLE)
    streams_server.advance_clock(86_401)
    assert len(_shards(streams, arn)) == 4
    assert all(_read(streams, arn, s["ShardId"])[0] == [] for s in _shards(streams, arn))


def test_new_stream(streams_server: StreamsServer) -> None:
    streams_server.create_table(TABLE)
    dynamodb = client(streams_server, "dynamodb")
    streams = client(streams_server)
    old_arn = dynamodb.describe_table(TableName=TABLE)["Table"]["LatestStreamArn"]
    streams_server.put(TABLE, _item("a", 1))
    new_arn = streams_server.new_stream(TABLE)
    streams_server.put(TABLE, _item("b", 1))

    table = dynamodb.describe_table(TableName=TABLE)["Table"]
    assert table["LatestStreamArn"] == new_arn != old_arn
    assert new_arn.startswith(f"arn:aws:dynamodb:us-east-1:123456789012:table/{TABLE}/stream/")
    assert table["LatestStreamLabel"] == new_arn.rsplit("/", 1)[1]
    old = streams.describe_stream(StreamArn=old_arn)["StreamDescription"]
    assert old["StreamStatus"] == "DISABLED"
    assert all("EndingSequenceNumber" in s["SequenceNumberRange"] for s in old["Shards"])
    assert streams.describe_stream(StreamArn=new_arn)["StreamDescription"]["StreamStatus"] == "ENABLED"
    # The old stream keeps its records, readable to the end; the new one has only what came after.
    old_records = [r for rs in _all_records(streams, old_arn).values() for r in rs]
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in old_records] == ["a"]
    assert all(_read(streams, old_arn, s["ShardId"])[1] for s in old["Shards"])
    new_records = [r for rs in _all_records(streams, new_arn).values() for r in rs]
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in new_records] == ["b"]

    streams_server.create_table("other")
    listed = streams.list_streams(TableName=TABLE)["Streams"]
    assert [s["StreamArn"] for s in listed] == [new_arn, old_arn]
    assert {s["TableName"] for s in listed} == {TABLE}
    assert len(streams.list_streams()["Streams"]) == 3
    first = streams.list_streams(Limit=1, TableName=TABLE)
    assert first["LastEvaluatedStreamArn"] == new_arn
    second = streams.list_streams(Limit=1, TableName=TABLE, ExclusiveStartStreamArn=new_arn)
    assert [s["StreamArn"] for s in second["Streams"]] == [old_arn]
    assert "LastEvaluatedStreamArn" not in second
    assert _error(streams.list_streams, TableName="missing")["Code"] == "ResourceNotFoundException"

    # Disabled: DescribeTable still names the last stream; writes make no records.
    streams_server.disable_stream(TABLE)
    table = dynamodb.describe_table(TableName=TABLE)["Table"]
    assert table["StreamSpecification"] == {"StreamEnabled": False}
    assert table["LatestStreamArn"] == new_arn
    assert streams_server.put(TABLE, _item("c", 1)) is None


# ---------------------------------------------------------------------------------------------
# DynamoDB operations


def test_describe_table(streams_server: StreamsServer) -> None:
    streams_server.create_table(TABLE, view_type="NEW_IMAGE", gsis=[("by_email", [("email", "S")])])
    for i in range(10):
        streams_server.put(TABLE, _item("a", i, **({"email": {"S": f"{i}@x"}} if i % 2 else {})))
    table = client(streams_server, "dynamodb").describe_table(TableName=TABLE)["Table"]
    assert table["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert table["AttributeDefinitions"] == [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "N"},
        {"AttributeName": "email", "AttributeType": "S"},
    ]
    assert table["ItemCount"] == 10
    assert table["TableSizeBytes"] == sum(len(orjson.dumps(i)) for i in streams_server.snapshot(TABLE).values())
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}
    assert table["LatestStreamArn"] == streams_server.stream_arn(TABLE)
    (gsi,) = table["GlobalSecondaryIndexes"]
    assert (gsi["IndexName"], gsi["ItemCount"]) == ("by_email", 5)
    assert client(streams_server, "dynamodb").list_tables()["TableNames"] == [TABLE]


def test_item_operations(streams_server: StreamsServer) -> None:
    streams_server.create_table(TABLE)
    dynamodb = client(streams_server, "dynamodb")
    assert "Attributes" not in dynamodb.put_item(TableName=TABLE, Item=_item("a", 1, v={"N": "1"}))
    old = dynamodb.put_item(TableName=TABLE, Item=_item("a", 1, v={"N": "2"}), ReturnValues="ALL_OLD")
    assert old["Attributes"] == _item("a", 1, v={"N": "1"})
    assert dynamodb.get_item(TableName=TABLE, Key=_key("a", "1.0"))["Item"] == _item("a", 1, v={"N": "2"})
    assert "Item" not in dynamodb.get_item(TableName=TABLE, Key=_key("a", 2))
    gone = dynamodb.delete_item(TableName=TABLE, Key=_key("a", 1), ReturnValues="ALL_OLD")
    assert gone["Attributes"] == _item("a", 1, v={"N": "2"})
    assert [r["eventName"] for r in streams_server.records(TABLE)] == ["INSERT", "MODIFY", "REMOVE"]

    for item, code in [
        ({"pk": {"S": "a"}}, "ValidationException"),
        ({"pk": {"N": "1"}, "sk": {"N": "1"}}, "ValidationException"),
        ({"pk": {"S": ""}, "sk": {"N": "1"}}, "ValidationException"),
        (_item("a", 1, big={"N": "1" * 39}), "ValidationException"),
        (_item("a", 1, s={"SS": ["x", "x"]}), "ValidationException"),
        (_item("a", 1, s={"SS": []}), "ValidationException"),
    ]:
        assert _error(dynamodb.put_item, TableName=TABLE, Item=item)["Code"] == code
    assert _error(dynamodb.put_item, TableName="missing", Item=_item("a", 1))["Code"] == "ResourceNotFoundException"
    error = _error(dynamodb.put_item, TableName=TABLE, Item=_item("a", 1), ConditionExpression="attribute_exists(pk)")
    assert "does not support ConditionExpression" in error["Message"]
    assert (
        _error(dynamodb.query, TableName=TABLE, KeyConditionExpression="pk = :a")["Code"] == "UnknownOperationException"
    )


def test_batch_get_item_with_unprocessed_keys(streams_server: StreamsServer) -> None:
    streams_server.create_table(TABLE)
    for i in range(90):
        streams_server.put(TABLE, _item(f"user#{i}", i, v={"S": "x" * i}))
    dynamodb = client(streams_server, "dynamodb")
    keys = [_key(f"user#{i}", i) for i in range(100)]  # the last ten do not exist

    streams_server.unprocessed_rate = 0.3
    found: list[dict[str, Any]] = []
    request: dict[str, Any] = {TABLE: {"Keys": keys, "ConsistentRead": True}}
    rounds = 0
    while request:
        page = dynamodb.batch_get_item(RequestItems=request)
        found += page["Responses"].get(TABLE, [])
        request = page["UnprocessedKeys"]
        if request:
            assert request[TABLE]["ConsistentRead"] is True
        rounds += 1
    assert rounds > 1
    assert sorted(int(item["sk"]["N"]) for item in found) == list(range(90))
    assert streams_server.stats(TABLE).unprocessed > 0

    streams_server.unprocessed_rate = 0
    error = _error(dynamodb.batch_get_item, RequestItems={TABLE: {"Keys": [*keys, _key("x", 1)]}})
    assert error["Code"] == "ValidationException"
    error = _error(dynamodb.batch_get_item, RequestItems={TABLE: {"Keys": [keys[0], _key("user#0", "0.0")]}})
    assert error == {"Code": "ValidationException", "Message": "Provided list of item keys contains duplicates"}
    # Nothing processed at all is a throttle, not an empty answer.
    streams_server.unprocessed_rate = 1
    throttled = client(streams_server, "dynamodb", retries={"mode": "standard", "total_max_attempts": 1})
    error = _error(throttled.batch_get_item, RequestItems={TABLE: {"Keys": keys[:3]}})
    assert error["Code"] == "ProvisionedThroughputExceededException"


def test_scan_pages_over_all_items(streams_server: StreamsServer) -> None:
    streams_server.create_table(TABLE)
    for i in range(2_500):
        streams_server.put(TABLE, _item(f"user#{i // 3}", i % 3, pad={"S": f"{i:05d}" * 200}))
    expected = streams_server.snapshot(TABLE)
    dynamodb = client(streams_server, "dynamodb")

    pages = list(dynamodb.get_paginator("scan").paginate(TableName=TABLE))
    assert len(pages) == 3
    assert all(len(orjson.dumps(p["Items"])) <= PAGE_BYTES + len(p["Items"]) for p in pages)
    got = {(i["pk"]["S"], i["sk"]["N"]): i for p in pages for i in p["Items"]}
    assert sum(p["Count"] for p in pages) == len(got) == 2_500
    assert got == expected

    # Parallel segments with Limit: each item once, a partition key in one segment.
    keys: list[Key] = []
    segment_of: dict[str, int] = {}
    for segment in range(4):
        paginator = dynamodb.get_paginator("scan")
        for page in paginator.paginate(
            TableName=TABLE, Segment=segment, TotalSegments=4, PaginationConfig={"PageSize": 300}
        ):
            assert page["Count"] <= 300
            for item in page["Items"]:
                keys.append((item["pk"]["S"], item["sk"]["N"]))
                assert segment_of.setdefault(item["pk"]["S"], segment) == segment
    assert sorted(keys) == sorted(expected)
    assert len(set(segment_of.values())) == 4

    # A page's LastEvaluatedKey resumes the scan even after that item is deleted.
    page = dynamodb.scan(TableName=TABLE, Limit=10)
    last = page["LastEvaluatedKey"]
    streams_server.delete(TABLE, last)
    rest = list(dynamodb.get_paginator("scan").paginate(TableName=TABLE, ExclusiveStartKey=last))
    assert sum(p["Count"] for p in rest) == 2_500 - 10
    other = (segment_of[last["pk"]["S"]] + 1) % 4
    error = _error(dynamodb.scan, TableName=TABLE, Segment=other, TotalSegments=4, ExclusiveStartKey=last)
    assert error["Code"] == "ValidationException"


# ---------------------------------------------------------------------------------------------
# Errors and faults


def test_streams_errors(streams_server: StreamsServer) -> None:
    streams_server.create_table(TABLE, shards=1)
    streams_server.put(TABLE, _item("k", 1))
    streams = client(streams_server)
    arn = _arn(streams_server)
    (shard,) = _shards(streams, arn)
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")[
        "ShardIterator"
    ]
    assert _error(streams.get_records, ShardIterator=iterator, Limit=1001)["Code"] == "ValidationException"
    assert len(streams.get_records(ShardIterator=iterator, Limit=1000)["Records"]) == 1
    missing = "shardId-00000000000000000000-00000000"
    error = _error(streams.get_shard_iterator, StreamArn=arn, ShardId=missing, ShardIteratorType="TRIM_HORIZON")
    assert error["Code"] == "ResourceNotFoundException"
    unknown = arn.rsplit("/", 1)[0] + "/2000-01-01T00:00:00.000"
    assert _error(streams.describe_stream, StreamArn=unknown)["Code"] == "ResourceNotFoundException"
    assert _error(streams.get_records, ShardIterator="not an iterator")["Code"] == "ValidationException"
    status, headers, body = _post(streams_server, "DynamoDBStreams_20120810.DescribeStream", {"StreamArn": unknown})
    assert status == 400
    assert orjson.loads(body)["__type"] == "com.amazonaws.dynamodb.v20120810#ResourceNotFoundException"
    assert headers["x-amz-crc32"] == str(zlib.crc32(body))
    # The two services do not answer each other's operations.
    assert _post(streams_server, "DynamoDB_20120810.GetRecords", {})[0] == 400
    assert _post(streams_server, "DynamoDBStreams_20120810.Scan", {"TableName": TABLE})[0] == 400


def test_faults_on_get_records_and_scan(streams_server: StreamsServer) -> None:
    streams_server.create_table(TABLE, shards=1)
    for i in range(50):
        streams_server.put(TABLE, _item("k", i))
    arn = _arn(streams_server)
    once = client(streams_server, retries={"mode": "standard", "total_max_attempts": 1})
    (shard,) = _shards(once, arn)
    iterator = once.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")[
        "ShardIterator"
    ]
    streams_server.throttle_rate = 1.0
    assert _error(once.get_records, ShardIterator=iterator)["Code"] == "LimitExceededException"
    scan_once = client(streams_server, "dynamodb", retries={"mode": "standard", "total_max_attempts": 1})
    assert _error(scan_once.scan, TableName=TABLE)["Code"] == "ProvisionedThroughputExceededException"
    # DescribeStream and GetShardIterator are not fault-prone unless asked.
    assert len(_shards(once, arn)) == 1

    # 500s and bad checksums: botocore's standard retries absorb them (it checks CRCs on DynamoDB only).
    streams_server.reset_faults()
    streams_server.set_faults(error_rate=0.3, crc_error_rate=0.3)
    patient = client(streams_server, retries={"mode": "standard", "max_attempts": 10})
    records = []
    next_iterator: str | None = iterator
    while next_iterator is not None:
        page = patient.get_records(ShardIterator=next_iterator, Limit=5)
        records += page["Records"]
        if not page["Records"]:
            break
        next_iterator = page.get("NextShardIterator")
    assert len(records) == 50
    dynamodb = client(streams_server, "dynamodb", retries={"mode": "standard", "max_attempts": 10})
    items = [
        i
        for p in dynamodb.get_paginator("scan").paginate(TableName=TABLE, PaginationConfig={"PageSize": 5})
        for i in p["Items"]
    ]
    assert len(items) == 50
    stats = streams_server.stats(TABLE)
    assert stats.errors > 0
    assert stats.crc_errors > 0
    assert stats.throttles == 2

    streams_server.reset_faults()
    streams_server.latency = 0.2
    started = time.perf_counter()
    once.list_streams()
    assert time.perf_counter() - started >= 0.2


# ---------------------------------------------------------------------------------------------
# A workload read back in lineage order


def _wire(value: Any) -> Any:
    """A value parsed by botocore back in DynamoDB JSON (botocore gives binary as bytes)."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {k: _wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_wire(v) for v in value]
    return value


def _random_item(rng: random.Random, pk: str, sk: str) -> dict[str, Any]:
    item = _item(pk, sk, v={"N": str(rng.randrange(1000))})
    if rng.random() < 0.5:
        item["tags"] = {"SS": rng.sample(["a", "b", "c", "d"], rng.randrange(1, 4))}
    if rng.random() < 0.3:
        item["blob"] = {"B": base64.b64encode(rng.randbytes(rng.randrange(1, 8))).decode()}
    if rng.random() < 0.3:
        item["doc"] = {"M": {"n": {"N": f"{rng.random():.6f}"}, "l": {"L": [{"S": "名前"}, {"BOOL": True}]}}}
    return item


def _write_workload(server: StreamsServer, changes: int, splits: Sequence[int]) -> None:
    """``changes`` random puts, updates and deletes that each make a record, splitting after ``splits`` of them."""
    rng = random.Random(11)
    keys = [(f"user#{i:03d}", str(i % 5)) for i in range(500)]
    made = 0
    while made < changes:
        pk, sk = rng.choice(keys)
        op = rng.random()
        if op < 0.55:
            event = server.put(TABLE, _random_item(rng, pk, sk))
        elif op < 0.85:
            remove = ["tags"] if rng.random() < 0.3 else []
            event = server.update(TABLE, _key(pk, sk), set={"v": {"N": str(rng.randrange(50))}}, remove=remove)
        else:
            event = server.delete(TABLE, _key(pk, sk))
        if event is None:
            continue  # it changed nothing
        made += 1
        if made in splits:
            server.split(TABLE)
        if made % 200 == 0:
            time.sleep(0.001)  # let the reader in while writing goes on


class _LineageReader:
    """A stream follower in a few lines of boto3: shards parents first, each to its end or its tip."""

    def __init__(self, streams: Any, arn: str) -> None:
        self.streams = streams
        self.arn = arn
        self.state: dict[Key, dict[str, Any]] = {}
        self.done: set[str] = set()
        self.iterators: dict[str, str] = {}
        self.read: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.parent_of: dict[str, str | None] = {}

    def follow_once(self) -> None:
        """One pass: every shard not done whose parent is done (or gone), read as far as it goes."""
        shards = _shards(self.streams, self.arn, Limit=7)
        listed = {s["ShardId"] for s in shards}
        for shard in shards:
            shard_id = shard["ShardId"]
            parent = shard.get("ParentShardId")
            self.parent_of[shard_id] = parent
            if shard_id not in self.done and (parent not in listed or parent in self.done):
                self._read(shard_id)

    def _read(self, shard_id: str) -> None:
        iterator: str | None = (
            self.iterators.get(shard_id)
            or self.streams.get_shard_iterator(StreamArn=self.arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON")[
                "ShardIterator"
            ]
        )
        while iterator is not None:
            page = self.streams.get_records(ShardIterator=iterator, Limit=1000)
            for record in page["Records"]:
                data = record["dynamodb"]
                key = (data["Keys"]["pk"]["S"], data["Keys"]["sk"]["N"])
                if record["eventName"] == "REMOVE":
                    self.state.pop(key, None)
                else:
                    self.state[key] = _wire(data["NewImage"])
            self.read[shard_id] += page["Records"]
            iterator = page.get("NextShardIterator")
            if iterator is None:
                self.done.add(shard_id)  # closed and read out: its children may start
            elif not page["Records"]:
                self.iterators[shard_id] = iterator  # at the tip of an open shard: come back later
                return

    def lineages(self) -> list[list[str]]:
        """Every path from a root shard to a leaf."""
        paths = []
        for leaf in set(self.parent_of) - set(self.parent_of.values()):
            chain = [leaf]
            while (parent := self.parent_of[chain[-1]]) is not None:
                chain.append(parent)
            paths.append(chain[::-1])
        return paths

    def generations(self) -> list[list[str]]:
        """The shards by depth: roots, their children, …"""
        out = [[s for s, p in self.parent_of.items() if p is None]]
        while True:
            following = [s for s, p in self.parent_of.items() if p in out[-1]]
            if not following:
                return out
            out.append(following)


def _record_key(record: dict[str, Any]) -> Key:
    keys = record["dynamodb"]["Keys"]
    return keys["pk"]["S"], keys["sk"]["N"]


def test_ten_thousand_changes_read_parents_first_rebuild_the_table(streams_server: StreamsServer) -> None:
    streams_server.create_table(TABLE)
    changes = 10_000
    failure: list[BaseException] = []
    finished = threading.Event()

    def write() -> None:
        try:
            _write_workload(streams_server, changes, (3_333, 6_666))
        except BaseException as e:
            failure.append(e)
        finally:
            finished.set()

    reader = _LineageReader(client(streams_server), _arn(streams_server))
    writer = threading.Thread(target=write, name="workload-writer")
    started = time.perf_counter()
    writer.start()
    while True:
        # Once the writer is done, one more full pass reads everything it wrote.
        last_pass = finished.is_set()
        reader.follow_once()
        if last_pass:
            break
        time.sleep(0.01)
    writer.join()
    elapsed = time.perf_counter() - started
    assert not failure, failure

    assert reader.state == streams_server.snapshot(TABLE)
    records = [r for shard in reader.read.values() for r in shard]
    assert len(records) == len({r["eventID"] for r in records}) == changes
    assert streams_server.stats(TABLE).records_written == changes
    assert [len(g) for g in reader.generations()] == [4, 8, 16]
    # Down each lineage, sequence numbers grow as integers; somewhere their text sorts the other way.
    text_disagrees = False
    for chain in reader.lineages():
        numbers = [r["dynamodb"]["SequenceNumber"] for shard in chain for r in reader.read[shard]]
        assert [int(n) for n in numbers] == sorted({int(n) for n in numbers})
        text_disagrees |= sorted(numbers) != numbers
    assert text_disagrees
    # Read generation by generation, each key's records come in the order they were written.
    written: dict[Key, list[str]] = defaultdict(list)
    for record in streams_server.records(TABLE):
        written[_record_key(record)].append(record["eventID"])
    seen: dict[Key, list[str]] = defaultdict(list)
    for generation in reader.generations():
        for shard_id in generation:
            for record in reader.read[shard_id]:
                seen[_record_key(record)].append(record["eventID"])
    assert seen == written
    assert elapsed < 15, f"{elapsed:.1f} s"
