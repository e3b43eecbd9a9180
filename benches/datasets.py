"""Deterministic DynamoDB datasets for benchmarks, as Scan response bodies of about 1 MB."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import orjson

# DynamoDB caps a Scan page at 1 MB of item data.
PAGE_BYTES = 1 << 20

_WORDS = """alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa
quebec romeo sierra tango uniform victor whiskey xray yankee zulu""".split()


def wide_item(i: int) -> bytes:
    """An item of 200 attributes (keys, ``balance``, and 197 numbers and strings), ≈ 4 KB of JSON."""
    rng = random.Random(i)
    item: dict[str, Any] = {
        "pk": {"S": f"user#{i // 4:08d}"},
        "sk": {"N": str(i % 4)},
        "balance": {"N": f"{rng.randint(-99999, 99999)}.{rng.randint(0, 99):02d}"},
    }
    for a in range(197):
        item[f"attr_{a:03d}"] = {"N": str(rng.randint(0, 10**6))} if a % 2 else {"S": rng.choice(_WORDS)}
    return orjson.dumps(item)


def large_item(i: int) -> bytes:
    """An item of ≈ 40 KB: a long text and a list of maps, next to the keys and ``balance``."""
    rng = random.Random(i)
    text = " ".join(rng.choices(_WORDS, k=4000))
    events = [{"M": {"at": {"N": str(1_700_000_000 + k)}, "what": {"S": rng.choice(_WORDS)}}} for k in range(300)]
    item = {
        "pk": {"S": f"user#{i // 4:08d}"},
        "sk": {"N": str(i % 4)},
        "balance": {"N": f"{rng.randint(-99999, 99999)}.{rng.randint(0, 99):02d}"},
        "text": {"S": text},
        "events": {"L": events},
    }
    return orjson.dumps(item)


def scan_pages(items: Iterator[bytes], page_bytes: int = PAGE_BYTES) -> list[bytes]:
    """Group items (DynamoDB JSON, kept byte for byte) into Scan response bodies of at most
    ``page_bytes`` of item JSON each, with Count, ScannedCount, LastEvaluatedKey and
    ConsumedCapacity as DynamoDB sends them."""
    pages: list[bytes] = []
    batch: list[bytes] = []
    size = 0

    def flush(last: bytes | None) -> None:
        nonlocal batch, size
        head = b'{"Items":[' + b",".join(batch) + b"]"
        tail = b',"Count":%d,"ScannedCount":%d' % (len(batch), len(batch))
        if last is not None:
            item = orjson.loads(last)
            tail += b',"LastEvaluatedKey":' + orjson.dumps({"pk": item["pk"], "sk": item["sk"]})
        tail += b',"ConsumedCapacity":{"TableName":"bench","CapacityUnits":%.1f}}' % (size / 8192)
        pages.append(head + tail)
        batch, size = [], 0

    for raw in items:
        if batch and size + len(raw) > page_bytes:
            flush(batch[-1])
        batch.append(raw)
        size += len(raw)
    if batch:
        flush(None)
    return pages
