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
_CITIES = ["Amsterdam", "Berlin", "Chicago", "Dublin", "Lisbon", "München", "Osaka", "São Paulo"]
_STATUS = ["active", "pending", "suspended", "closed"]


def typical_item(i: int, rng: random.Random) -> dict[str, Any]:
    """An item of about 380 bytes of DynamoDB JSON (≈ 250 bytes as DynamoDB counts item size) and
    12 attributes, with a nested map and a string set, shaped like a user/order table."""
    tags = sorted(rng.sample(_WORDS, rng.randint(1, 4)))
    return {
        "pk": {"S": f"user#{i // 4:08d}"},
        "sk": {"N": str(i % 4)},
        "name": {"S": " ".join(rng.sample(_WORDS, 2)).title()},
        "email": {"S": f"{rng.choice(_WORDS)}{i}@ex.com"},
        "status": {"S": rng.choice(_STATUS)},
        "amount": {"N": f"{rng.randint(0, 99999)}.{rng.randint(0, 99):02d}"},
        "active": {"BOOL": rng.random() < 0.7},
        "created": {"S": f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"},
        "tags": {"SS": tags},
        "score": {"N": str(rng.randint(-1000, 100000))},
        "address": {
            "M": {
                "city": {"S": rng.choice(_CITIES)},
                "geo": {
                    "M": {
                        "lat": {"N": f"{rng.uniform(-90, 90):.6f}"},
                        "lon": {"N": f"{rng.uniform(-180, 180):.6f}"},
                    }
                },
            }
        },
        "note": {"S": " ".join(rng.choices(_WORDS, k=rng.randint(1, 2)))},
    }


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


def scan_pages(items: Iterator[dict[str, Any]], page_bytes: int = PAGE_BYTES) -> list[bytes]:
    """Group items into Scan response bodies of at most ``page_bytes`` of item JSON each, with
    Count, ScannedCount, LastEvaluatedKey and ConsumedCapacity as DynamoDB sends them."""
    pages: list[bytes] = []
    batch: list[bytes] = []
    size = 0

    def flush(last_key: dict[str, Any] | None) -> None:
        nonlocal batch, size
        head = b'{"Items":[' + b",".join(batch) + b"]"
        tail = b',"Count":%d,"ScannedCount":%d' % (len(batch), len(batch))
        if last_key is not None:
            tail += b',"LastEvaluatedKey":' + orjson.dumps(last_key)
        tail += b',"ConsumedCapacity":{"TableName":"bench","CapacityUnits":%.1f}}' % (size / 8192)
        pages.append(head + tail)
        batch, size = [], 0

    last: dict[str, Any] | None = None
    for item in items:
        raw = orjson.dumps(item)
        if batch and size + len(raw) > page_bytes:
            flush({"pk": last["pk"], "sk": last["sk"]} if last else None)
        batch.append(raw)
        size += len(raw)
        last = item
    if batch:
        flush(None)
    return pages


def typical_pages(n_items: int, seed: int = 42) -> list[bytes]:
    rng = random.Random(seed)
    return scan_pages(typical_item(i, rng) for i in range(n_items))
