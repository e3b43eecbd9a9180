"""A fast DynamoDB server for Scan-heavy tests and benchmarks: real HTTP, the real JSON 1.0 protocol.

moto answers about 540 items/s, far too slow for tests with hundreds of thousands of items. This
server holds tables declared in Python (``TableSpec``), whose items are generated deterministically
from their position and cached as DynamoDB JSON bytes: a Scan page is the cached bytes joined, never
an item re-serialised. A botocore client pointed at it with ``endpoint_url`` works unchanged;
signatures are not checked, so any credentials do.

Operations: ListTables, DescribeTable and Scan (``Segment``/``TotalSegments``, ``Limit``,
``ExclusiveStartKey``, ``ConsistentRead``, ``ReturnConsumedCapacity``, ``Select=COUNT``); anything
else is answered ``UnknownOperationException``. Faults (latency, throttling, 500s, bad CRC32 headers)
can be set at runtime, and per-table counters show what was served.

Where it knowingly differs from DynamoDB:

- An item's size is the length of its JSON, not DynamoDB's binary size (attribute names plus values);
  it drives the 1 MB page limit, ``TableSizeBytes`` and ``ConsumedCapacity``. Real pages of the same
  items hold more of them, as DynamoDB's size is smaller than the JSON.
- A page never holds more than 1,048,576 bytes of items; DynamoDB lets the item that crosses 1 MB in.
- ``ExclusiveStartKey`` must be the key of an item of the table (as every ``LastEvaluatedKey`` is);
  DynamoDB also accepts keys of items that do not exist.
- Filters, projections and index scans (``FilterExpression``, ``ProjectionExpression``, ``IndexName``,
  the legacy ``ScanFilter`` …) are refused with a ValidationException rather than half-supported.

Run ``python -m tests.servers.scan --items N --port P [--latency S]`` for a standalone server with a
table ``bench`` of ``typical_item`` items.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import bisect
import contextlib
import email.utils
import http.server
import random
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
import zlib
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from types import FrameType, TracebackType
from typing import Any, Final, NamedTuple

import orjson

PAGE_BYTES: Final = 1_048_576
"""The most item bytes one Scan page carries."""
MAX_TOTAL_SEGMENTS: Final = 1_000_000
REGION: Final = "us-east-1"
ACCOUNT: Final = "123456789012"
TYPICAL_KEYS: Final = (("pk", "S"), ("sk", "N"))
"""The key schema of ``typical_item`` and ``all_types_item``."""

_TARGET_PREFIX = "DynamoDB_20120810."
# DynamoDB's own error documents: service errors carry the API's namespace, but request validation
# and wire errors come from the Coral framework underneath (clients only read the part after '#').
_DYNAMO = "com.amazonaws.dynamodb.v20120810#"
_VALIDATE = "com.amazon.coral.validate#"
_CORAL = "com.amazon.coral.service#"
_CONTENT_TYPE = "application/x-amz-json-1.0"
# A fixed creation time keeps DescribeTable answers reproducible.
_CREATED = 1_700_000_000.0
_KEY_TYPES = frozenset({"S", "N", "B"})
_SCAN_PARAMS = frozenset(
    {
        "TableName",
        "Segment",
        "TotalSegments",
        "Limit",
        "ExclusiveStartKey",
        "ConsistentRead",
        "ReturnConsumedCapacity",
        "Select",
    }
)
_SELECT = ("SPECIFIC_ATTRIBUTES", "COUNT", "ALL_ATTRIBUTES", "ALL_PROJECTED_ATTRIBUTES")
_CAPACITY = ("INDEXES", "TOTAL", "NONE")
# Segment orderings are kept for this many distinct TotalSegments values per table; a client that
# tries many would otherwise grow the cache without bound.
_ORDERINGS_KEPT = 8
_REASONS = {200: "OK", 400: "Bad Request", 500: "Internal Server Error"}

IndexSpec = tuple[str, Sequence[tuple[str, str]]]


@dataclass(frozen=True)
class TableSpec:
    """A table: its key schema and ``count`` items, item ``i`` being ``items(i)`` (DynamoDB JSON bytes).

    ``key_schema`` is ``[(attribute, "S" | "N" | "B")]``, partition key first, then the optional sort
    key. ``gsis``/``lsis`` are ``[(index name, key schema)]`` and only appear in DescribeTable (an
    LSI's schema may give just its sort key). ``billing`` is ``"PAY_PER_REQUEST"`` or the provisioned
    read capacity (write capacity reported equal). ``items`` must be deterministic: items are generated
    once, on first use, and cached.
    """

    name: str
    key_schema: Sequence[tuple[str, str]]
    items: Callable[[int], bytes]
    count: int
    gsis: Sequence[IndexSpec] = ()
    lsis: Sequence[IndexSpec] = ()
    billing: str | int = "PAY_PER_REQUEST"

    def __post_init__(self) -> None:
        # Tuples, so a spec cannot change under a running server.
        object.__setattr__(self, "key_schema", tuple((a, t) for a, t in self.key_schema))
        object.__setattr__(self, "gsis", tuple((n, tuple(k)) for n, k in self.gsis))
        object.__setattr__(self, "lsis", tuple((n, tuple(k)) for n, k in self.lsis))
        if not 3 <= len(self.name) <= 255 or not all(c.isascii() and (c.isalnum() or c in "_.-") for c in self.name):
            raise ValueError(f"invalid table name {self.name!r}")
        _check_key_schema(self.name, self.key_schema)
        if self.count < 0:
            raise ValueError(f"{self.name}: negative item count")
        if isinstance(self.billing, bool) or not (
            self.billing == "PAY_PER_REQUEST" or (isinstance(self.billing, int) and self.billing > 0)
        ):
            raise ValueError(f"{self.name}: billing is 'PAY_PER_REQUEST' or a positive read capacity")
        for index, schema in self.indexes():
            _check_key_schema(f"{self.name}/{index}", schema)
        names = [n for n, _ in self.gsis] + [n for n, _ in self.lsis]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: duplicate index name")
        self.attribute_definitions()

    def indexes(self) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
        """Every secondary index with its full key schema (an LSI shares the table's partition key)."""
        out = [(n, tuple(k)) for n, k in self.gsis]
        for name, schema in self.lsis:
            full = tuple(schema) if len(schema) == 2 else (self.key_schema[0], *schema)
            if full[0] != self.key_schema[0]:
                raise ValueError(f"{self.name}/{name}: a local index shares the table's partition key")
            out.append((name, full))
        return out

    def attribute_definitions(self) -> list[tuple[str, str]]:
        """Every key attribute of the table and its indexes, once, in order of first appearance."""
        seen: dict[str, str] = {}
        for attr, type_ in [*self.key_schema, *(k for _, schema in self.indexes() for k in schema)]:
            if seen.setdefault(attr, type_) != type_:
                raise ValueError(f"{self.name}: attribute {attr!r} declared as both {seen[attr]} and {type_}")
        return list(seen.items())


def _check_key_schema(owner: str, schema: Sequence[tuple[str, str]]) -> None:
    if len(schema) not in (1, 2) or len({a for a, _ in schema}) != len(schema):
        raise ValueError(f"{owner}: a key schema is a partition key and an optional, different sort key")
    for attr, type_ in schema:
        if type_ not in _KEY_TYPES or not attr:
            raise ValueError(f"{owner}: key attribute {attr!r} of type {type_!r}")


@dataclass(frozen=True)
class TableStats:
    """What one table served.

    ``requests`` counts the valid DescribeTable and Scan requests naming the table, faulty answers
    included; ``items`` and ``bytes`` (response bodies) count the Scan pages served, retries included.
    """

    requests: int = 0
    throttles: int = 0
    errors: int = 0
    crc_errors: int = 0
    items: int = 0
    bytes: int = 0


class DynamoError(Exception):
    """An error answer: HTTP status and a DynamoDB error document."""

    def __init__(self, status: int, namespace: str, code: str, message: str, **extra: Any) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.body = orjson.dumps({"__type": namespace + code, "message": message, **extra})


def _validation(message: str) -> DynamoError:
    return DynamoError(400, _VALIDATE, "ValidationException", message)


def _serialization(message: str) -> DynamoError:
    return DynamoError(400, _CORAL, "SerializationException", message)


# ---------------------------------------------------------------------------------------------
# Item generators


_M64 = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64's finaliser: well-spread bits from a counter, several times cheaper than random.Random(i)."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


_FIRST = "Ada Alan Barbara Claude Donald Edsger Frances Grace John Ken Leslie Margaret Niklaus Radia Tim Xavier".split()
_LAST = (
    "Lovelace Turing Liskov Shannon Knuth Dijkstra Allen Hopper Backus Thompson Lamport Hamilton Wirth Perlman Lee Ng"
).split()
_CITIES = "Lisbon Porto Berlin Paris Tokyo Osaka Austin Denver Lima Quito Oslo Bergen Cairo Accra Perth Hobart".split()
_TAGS = "admin beta churned dormant early enterprise free gold legacy mobile new pro referral silver trial vip".split()
_THEMES = ("dark", "light", "solarized", "contrast")
_LANGS = ("en", "pt", "fr", "de", "ja", "es", "it", "nl")
_WORDS = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et "
    "dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris nisi aliquip ex ea"
).split()


def _cents(value: int) -> str:
    """A number of hundredths as DynamoDB returns numbers: plain decimal, no trailing zeros, no -0."""
    whole, frac = divmod(abs(value), 100)
    sign = "-" if value < 0 else ""
    if frac == 0:
        return f"{sign}{whole}"
    if frac % 10 == 0:
        return f"{sign}{whole}.{frac // 10}"
    return f"{sign}{whole}.{frac:02d}"


def typical_item(i: int) -> bytes:
    """A ≈400-byte user record with 12 attributes (S, N, BOOL, SS, nested M), deterministic from ``i``.

    Keys: ``pk`` = ``user#`` and ``i // 4`` (S), ``sk`` = ``i % 4`` (N), so four items share each
    partition key. The text is compact, ASCII-only JSON, so ``orjson.dumps(orjson.loads(b))`` gives
    back the same bytes.
    """
    x = _mix(i)
    y = _mix(x ^ i)
    z = _mix(y) | (_mix(y ^ x) << 64)
    first = _FIRST[x & 15]
    last = _LAST[(x >> 4) & 15]
    mask = (x >> 40) & 0xFFFF or 1
    tags = '","'.join([_TAGS[b] for b in range(16) if mask >> b & 1][:3])
    words = " ".join(_WORDS[(z >> (5 * k)) & 31] for k in range(2 + (z >> 125)))
    active = "true" if (x >> 8) & 1 else "false"
    return (
        f'{{"pk":{{"S":"user#{i // 4:08d}"}},"sk":{{"N":"{i % 4}"}},'
        f'"name":{{"S":"{first} {last}"}},"email":{{"S":"{first.lower()}.{last.lower()}{i}@example.com"}},'
        f'"age":{{"N":"{18 + (x >> 9) % 80}"}},"score":{{"N":"{_cents((x >> 16) % 100_000)}"}},'
        f'"active":{{"BOOL":{active}}},"tags":{{"SS":["{tags}"]}},'
        f'"profile":{{"M":{{"city":{{"S":"{_CITIES[y & 15]}"}},"zip":{{"S":"{(y >> 4) % 100_000:05d}"}},'
        f'"prefs":{{"M":{{"theme":{{"S":"{_THEMES[(y >> 24) & 3]}"}},"lang":{{"S":"{_LANGS[(y >> 26) & 7]}"}}}}}}}}}},'
        f'"created":{{"N":"{1_600_000_000 + (y >> 30) % 100_000_000}"}},'
        f'"balance":{{"N":"{_cents(((x ^ y) >> 20) % 2_000_000 - 1_000_000)}"}},'
        f'"bio":{{"S":"{words}"}}}}'
    ).encode()


_STRINGS = ("plain", "ünïcødé", "名前", "😀𝄞", 'q"b\\c', "line\nbreak\ttab", "\u2028sep", "", "a/b<c>&d")
_NUMBERS = (
    "0",
    "-0",
    "1",
    "-1.5E+3",
    "1e100",
    "1E-130",
    "0.000",
    "1.50",
    "-2.50e-3",
    "9.9999999999999999999999999999999999999E+125",
    "-9.9999999999999999999999999999999999999E+125",
    "12345678901234567890123456789012345678",
    "1" + "0" * 125,
)
# Numerically distinct, as a number set must be.
_SET_NUMBERS = ("1", "2.5", "-3", "1E-130", "4e2", "9.9999999999999999999999999999999999999E+125", "-0.001")
_NAMES = ("plain", "名前", "😀", "with space", 'q"uote', "dot.ted", "x" * 70)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _any_value(rng: random.Random, depth: int) -> dict[str, Any]:
    """A random value of any type; containers nest up to four levels."""
    make: dict[str, Callable[[], Any]] = {
        "S": lambda: rng.choice(_STRINGS),
        "N": lambda: rng.choice(_NUMBERS),
        "B": lambda: _b64(rng.randbytes(rng.randrange(0, 9))),
        "BOOL": lambda: rng.random() < 0.5,
        "NULL": lambda: True,
        "SS": lambda: rng.sample([s for s in _STRINGS if s], rng.randrange(1, 4)),
        "NS": lambda: rng.sample(_SET_NUMBERS, rng.randrange(1, 4)),
        "BS": lambda: [_b64(bytes([b]) * (1 + b % 3)) for b in rng.sample(range(256), rng.randrange(1, 4))],
    }
    if depth < 4:
        make["L"] = lambda: [_any_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
        make["M"] = lambda: {rng.choice(_NAMES): _any_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))}
    kind = rng.choice(list(make))
    return {kind: make[kind]()}


def all_types_item(i: int) -> bytes:
    """An item with every DynamoDB type, deterministic from ``i`` (seeded ``random.Random(i)``).

    Keys as ``typical_item`` but with a non-ASCII partition key (``all#…·ü``). Each top-level attribute
    keeps one type across items except ``mixed`` (S, N or BOOL by item), and some appear only in some
    items. Text is raw UTF-8, not ``\\u`` escapes; numbers include exponent forms and 126 digits;
    L and M nest other values, empty ones included.
    """
    rng = random.Random(i)
    item: dict[str, Any] = {
        "pk": {"S": f"all#{i // 4:06d}·ü"},
        "sk": {"N": str(i % 4)},
        "s": {"S": _STRINGS[i % len(_STRINGS)]},
        "n": {"N": _NUMBERS[i % len(_NUMBERS)]},
        "b": {"B": _b64(rng.randbytes(i % 7))},
        "bool": {"BOOL": i % 2 == 0},
        "null": {"NULL": True},
        "ss": {"SS": rng.sample([s for s in _STRINGS if s], 1 + i % 3)},
        "ns": {"NS": rng.sample(_SET_NUMBERS, 1 + i % 4)},
        "bs": {"BS": [_b64(bytes([b, i % 256])) for b in rng.sample(range(256), 1 + i % 3)]},
        "l": {"L": [_any_value(rng, 1) for _ in range(i % 5)]},
        "m": {
            "M": {
                "inner": {"M": {"deep": {"L": [{"M": {"x": _any_value(rng, 3)}}, {"N": "-1.5E+3"}]}}},
                "名前": {"S": rng.choice(_STRINGS)},
                "any": _any_value(rng, 1),
            }
        },
        "mixed": ({"S": "text"}, {"N": str(i)}, {"BOOL": True})[i % 3],
    }
    if i % 5 == 0:
        item["sparse"] = {"S": "only on every fifth item"}
        item["empty_l"] = {"L": []}
        item["empty_m"] = {"M": {}}
    if i % 7 == 3:
        item[rng.choice(_NAMES)] = _any_value(rng, 0)
    return orjson.dumps(item)


# ---------------------------------------------------------------------------------------------
# Tables


def _key_part(value: object, type_: str) -> object | None:
    """A key value in a form that compares as DynamoDB compares keys, or None if it is not one.

    Numbers compare by value (``3`` = ``3.0``): integers become ``int``, the rest ``Decimal``, whose
    hashes agree for equal values. Binary compares by its decoded bytes.
    """
    if not isinstance(value, dict) or len(value) != 1:
        return None
    ((tag, text),) = value.items()
    if tag != type_ or not isinstance(text, str) or not text:
        return None
    if tag == "N":
        return _number_key(text)
    if tag == "B":
        try:
            return base64.b64decode(text, validate=True)
        except binascii.Error:
            return None
    return text


def _number_key(text: str) -> object | None:
    if text.isdigit() and text.isascii():
        return int(text)
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


class _Ordering(NamedTuple):
    """The items of a segment in serving order, with running byte totals for page cuts."""

    indices: array[int] | None  # None: the whole table in item order
    cum: array[int]  # cum[k]: bytes of the first k items

    def position_after(self, index: int) -> int:
        if self.indices is None:
            return index + 1
        # Indices ascend within a segment, so the item's position is found by bisection.
        return bisect.bisect_right(self.indices, index)

    def items(self, items: list[bytes], start: int, end: int) -> list[bytes]:
        if self.indices is None:
            return items[start:end]
        return [items[j] for j in self.indices[start:end]]


class _Table:
    """A TableSpec's items, generated on first use and cached with what Scan needs to cut pages."""

    def __init__(self, spec: TableSpec) -> None:
        self.spec = spec
        self.arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{spec.name}"
        self._lock = threading.Lock()
        self._built = False
        self.items: list[bytes] = []
        self.sizes: array[int] = array("q")
        self.hashes: array[int] = array("q")
        # Canonical key -> item index, to resume after an ExclusiveStartKey.
        self.positions: dict[tuple[object, ...], int] = {}
        self.index_stats: dict[str, tuple[int, int]] = {}
        self.whole = _Ordering(None, array("q", [0]))
        self._groups: dict[int, dict[int, array[int]]] = {}
        self._orderings: dict[tuple[int, int], _Ordering] = {}

    @property
    def size(self) -> int:
        return self.whole.cum[-1]

    def build(self) -> None:
        if self._built:
            return
        with self._lock:
            if not self._built:
                self._build()
                self._built = True

    def _build(self) -> None:
        spec = self.spec
        key_schema = spec.key_schema
        partition = key_schema[0][0]
        index_attrs = [(name, [a for a, _ in schema]) for name, schema in spec.indexes()]
        index_counts = {name: [0, 0] for name, _ in index_attrs}
        # Built aside and published at the end, so a generator that fails leaves the table unbuilt
        # rather than half-filled.
        items: list[bytes] = []
        sizes: array[int] = array("q")
        hashes: array[int] = array("q")
        positions: dict[tuple[object, ...], int] = {}
        cum: array[int] = array("q", [0])
        total = 0
        for i in range(spec.count):
            raw = spec.items(i)
            try:
                doc = orjson.loads(raw)
            except orjson.JSONDecodeError as e:
                raise ValueError(f"{spec.name}: item {i} is not JSON: {e}") from e
            if not isinstance(doc, dict):
                raise ValueError(f"{spec.name}: item {i} is not a JSON object")
            key = tuple(_key_part(doc.get(attr), type_) for attr, type_ in key_schema)
            if None in key:
                raise ValueError(f"{spec.name}: item {i} lacks a valid key {key_schema}: {raw[:200]!r}")
            if positions.setdefault(key, i) != i:
                raise ValueError(f"{spec.name}: items {positions[key]} and {i} have the same key {key}")
            # A stable hash of the partition key's text spreads partitions unevenly over segments,
            # as DynamoDB's does, and keeps an item in one segment for a given TotalSegments.
            ((_, text),) = doc[partition].items()
            hashes.append(zlib.crc32(text.encode()))
            size = len(raw)
            total += size
            sizes.append(size)
            cum.append(total)
            items.append(raw)
            for name, attrs in index_attrs:
                if all(a in doc for a in attrs):
                    index_counts[name][0] += 1
                    index_counts[name][1] += size
        self.items, self.sizes, self.hashes, self.positions = items, sizes, hashes, positions
        self.whole = _Ordering(None, cum)
        self.index_stats = {name: (n, b) for name, (n, b) in index_counts.items()}

    def ordering(self, total: int, segment: int) -> _Ordering:
        """The items of ``segment`` of ``total``, in item order; built on first use and cached."""
        if total == 1:
            return self.whole
        with self._lock:
            found = self._orderings.get((total, segment))
            if found is not None:
                return found
            groups = self._groups.get(total)
            if groups is None:
                groups = {}
                for i, h in enumerate(self.hashes):
                    group = groups.get(h % total)
                    if group is None:
                        group = groups[h % total] = array("q")
                    group.append(i)
                self._groups[total] = groups
                if len(self._groups) > _ORDERINGS_KEPT:
                    del self._groups[next(iter(self._groups))]
                    self._orderings = {k: v for k, v in self._orderings.items() if k[0] in self._groups}
            indices = groups.get(segment, array("q"))
            cum = array("q", [0])
            running = 0
            sizes = self.sizes
            for j in indices:
                running += sizes[j]
                cum.append(running)
            found = self._orderings[(total, segment)] = _Ordering(indices, cum)
            return found

    def describe(self) -> dict[str, Any]:
        spec = self.spec
        if isinstance(spec.billing, int):
            throughput = {
                "NumberOfDecreasesToday": 0,
                "ReadCapacityUnits": spec.billing,
                "WriteCapacityUnits": spec.billing,
            }
        else:
            throughput = {"NumberOfDecreasesToday": 0, "ReadCapacityUnits": 0, "WriteCapacityUnits": 0}
        table: dict[str, Any] = {
            "AttributeDefinitions": [{"AttributeName": a, "AttributeType": t} for a, t in spec.attribute_definitions()],
            "TableName": spec.name,
            "KeySchema": _key_schema_json(spec.key_schema),
            "TableStatus": "ACTIVE",
            "CreationDateTime": _CREATED,
            "ProvisionedThroughput": throughput,
            "TableSizeBytes": self.size,
            "ItemCount": len(self.items),
            "TableArn": self.arn,
            "TableId": str(uuid.uuid5(uuid.NAMESPACE_URL, self.arn)),
        }
        # Tables created on demand report their mode; tables created provisioned often carry no summary.
        if spec.billing == "PAY_PER_REQUEST":
            table["BillingModeSummary"] = {
                "BillingMode": "PAY_PER_REQUEST",
                "LastUpdateToPayPerRequestDateTime": _CREATED,
            }
        lsi_names = {n for n, _ in spec.lsis}
        gsis, lsis = [], []
        for name, schema in spec.indexes():
            count, size = self.index_stats[name]
            index: dict[str, Any] = {
                "IndexName": name,
                "KeySchema": _key_schema_json(schema),
                "Projection": {"ProjectionType": "ALL"},
                "IndexSizeBytes": size,
                "ItemCount": count,
                "IndexArn": f"{self.arn}/index/{name}",
            }
            if name in lsi_names:
                lsis.append(index)
            else:
                index["IndexStatus"] = "ACTIVE"
                index["ProvisionedThroughput"] = throughput
                gsis.append(index)
        if lsis:
            table["LocalSecondaryIndexes"] = lsis
        if gsis:
            table["GlobalSecondaryIndexes"] = gsis
        table["DeletionProtectionEnabled"] = False
        return {"Table": table}


def _key_schema_json(schema: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    return [
        {"AttributeName": a, "KeyType": kind}
        for (a, _), kind in zip(schema, ("HASH", "RANGE")[: len(schema)], strict=True)
    ]


# ---------------------------------------------------------------------------------------------
# Request parsing


def _table_name(req: dict[str, Any]) -> str:
    name = req.get("TableName")
    if name is None:
        raise _validation(
            "1 validation error detected: Value null at 'tableName' failed to satisfy constraint: "
            "Member must not be null"
        )
    if not isinstance(name, str):
        raise _serialization("TableName must be a string")
    # DynamoDB also accepts a table's ARN wherever it takes its name.
    if name.startswith("arn:") and ":table/" in name:
        return name.split(":table/", 1)[1]
    return name


def _int(req: dict[str, Any], name: str) -> int | None:
    value = req.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _serialization(f"NUMBER_VALUE cannot be converted to Integer ({name})")
    return value


def _str(req: dict[str, Any], name: str) -> str | None:
    value = req.get(name)
    if value is None or isinstance(value, str):
        return value
    raise _serialization(f"Unexpected value type in payload ({name})")


def _at_least(value: int, floor: int, field: str) -> None:
    if value < floor:
        raise _validation(
            f"1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: "
            f"Member must have value greater than or equal to {floor}"
        )


def _at_most(value: int, ceiling: int, field: str) -> None:
    if value > ceiling:
        raise _validation(
            f"1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: "
            f"Member must have value less than or equal to {ceiling}"
        )


def _enum(value: str | None, allowed: Sequence[str], field: str) -> None:
    if value is not None and value not in allowed:
        raise _validation(
            f"1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: "
            f"Member must satisfy enum value set: [{', '.join(allowed)}]"
        )


class _Scan(NamedTuple):
    """A validated Scan request."""

    table: str
    limit: int | None
    segment: int
    total: int
    count_only: bool
    capacity: str | None
    consistent: bool
    start_key: dict[str, Any] | None


def _parse_scan(req: dict[str, Any]) -> _Scan:
    """Check a Scan request as DynamoDB does, with its messages, in its order."""
    unsupported = sorted(set(req) - _SCAN_PARAMS)
    if unsupported:
        raise _validation(f"The podyn-fast test server does not support {', '.join(unsupported)} in Scan")
    name = _table_name(req)
    limit = _int(req, "Limit")
    segment = _int(req, "Segment")
    total = _int(req, "TotalSegments")
    select = _str(req, "Select")
    capacity = _str(req, "ReturnConsumedCapacity")
    consistent = req.get("ConsistentRead", False)
    if not isinstance(consistent, bool):
        raise _serialization("ConsistentRead must be a boolean")
    start_key = req.get("ExclusiveStartKey")
    if start_key is not None and not isinstance(start_key, dict):
        raise _serialization("ExclusiveStartKey must be a map")
    if limit is not None:
        _at_least(limit, 1, "limit")
    _enum(select, _SELECT, "select")
    _enum(capacity, _CAPACITY, "returnConsumedCapacity")
    _check_segments(segment, total)
    if select not in (None, "ALL_ATTRIBUTES", "COUNT"):
        raise _validation(f"The podyn-fast test server does not support Select={select}")
    return _Scan(name, limit, segment or 0, total or 1, select == "COUNT", capacity, consistent, start_key)


def _check_segments(segment: int | None, total: int | None) -> None:
    if segment is not None:
        _at_least(segment, 0, "segment")
        _at_most(segment, MAX_TOTAL_SEGMENTS - 1, "segment")
    if total is not None:
        _at_least(total, 1, "totalSegments")
        _at_most(total, MAX_TOTAL_SEGMENTS, "totalSegments")
    if segment is not None and total is None:
        raise _validation(
            "The TotalSegments parameter is required but was not present in the request when "
            "Segment parameter is present"
        )
    if total is not None and segment is None:
        raise _validation(
            "The Segment parameter is required but was not present in the request when parameter "
            "TotalSegments is present"
        )
    if total is not None and segment is not None and segment >= total:
        raise _validation(
            "The Segment parameter is zero-based and must be less than parameter TotalSegments: "
            f"Segment: {segment} is not less than TotalSegments: {total}"
        )


def _page(table: _Table, ordering: _Ordering, start: int, scan: _Scan) -> tuple[bytes, int]:
    """The body of the Scan page starting at position ``start`` of ``ordering``, and its item count."""
    cum = ordering.cum
    length = len(cum) - 1
    # The last item whose running total stays within 1 MB of the page's start; at least one item.
    end = max(bisect.bisect_right(cum, cum[start] + PAGE_BYTES, lo=start) - 1, min(start + 1, length))
    stopped = end < length
    if scan.limit is not None and end - start >= scan.limit:
        end = start + scan.limit
        # Like DynamoDB: a page cut by Limit names its last key even when nothing follows.
        stopped = True
    count = end - start
    parts = []
    if scan.capacity in ("TOTAL", "INDEXES"):
        # Scan charges the items' total size in 4 KB units (not each item rounded up), at least one.
        units = max(1, -(-(cum[end] - cum[start]) // 4096)) * (1.0 if scan.consistent else 0.5)
        consumed: dict[str, Any] = {"TableName": table.spec.name, "CapacityUnits": units}
        if scan.capacity == "INDEXES":
            consumed["Table"] = {"CapacityUnits": units}
        parts.append(b'"ConsumedCapacity":' + orjson.dumps(consumed))
    parts.append(b'"Count":%d' % count)
    if not scan.count_only:
        parts.append(b'"Items":[' + b",".join(ordering.items(table.items, start, end)) + b"]")
    if stopped and count:
        last_index = end - 1 if ordering.indices is None else ordering.indices[end - 1]
        last = orjson.loads(table.items[last_index])
        key = {attr: last[attr] for attr, _ in table.spec.key_schema}
        parts.append(b'"LastEvaluatedKey":' + orjson.dumps(key))
    parts.append(b'"ScannedCount":%d' % count)
    # The fields in DynamoDB's (alphabetical) order: Items is not the last, so a reader cannot stop
    # at it.
    return b"{" + b",".join(parts) + b"}", count


class _Reply(NamedTuple):
    status: int
    body: bytes
    bad_crc: bool = False


# ---------------------------------------------------------------------------------------------
# The server


class _HTTPServer(http.server.ThreadingHTTPServer):
    """One thread per connection; remembers open connections so stop() can end idle keep-alives."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: ScanServer) -> None:
        self.app = app
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        try:
            super().finish_request(request, client_address)
        finally:
            with self.connections_lock:
                self.connections.discard(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that goes away mid-response is normal under retries and timeouts; anything else
        # is a bug worth a traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in one write, but small error answers must not wait for Nagle.
    disable_nagle_algorithm = True
    server: _HTTPServer

    def do_POST(self) -> None:
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():
            # Without a length the rest of the stream cannot be framed: answer and hang up.
            self.close_connection = True
            self._send(DynamoError(400, _CORAL, "SerializationException", "Content-Length required").body, 400)
            return
        body = self.rfile.read(int(length))
        reply = self.server.app.dispatch(self.headers.get("X-Amz-Target", ""), body)
        self._send(reply.body, reply.status, bad_crc=reply.bad_crc)

    def do_GET(self) -> None:
        # DynamoDB's health check answer, handy to probe the server with curl.
        self._send(f"healthy: dynamodb.{REGION}.amazonaws.com ".encode(), 200, content_type="text/plain")

    def _send(self, body: bytes, status: int, *, content_type: str = _CONTENT_TYPE, bad_crc: bool = False) -> None:
        crc = zlib.crc32(body)
        if bad_crc:
            crc ^= 0xFFFFFFFF
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            "Server: Server\r\n"
            f"Date: {email.utils.formatdate(usegmt=True)}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"Connection: {'close' if self.close_connection else 'keep-alive'}\r\n"
            f"x-amzn-RequestId: {_request_id()}\r\n"
            f"x-amz-crc32: {crc}\r\n\r\n"
        ).encode("ascii")
        # One write: the body is a fresh bytes object anyway, and one send avoids a small-packet stall.
        self.wfile.write(head + body)

    def log_message(self, format: str, *args: Any) -> None:
        # Thousands of requests per second would drown the test output.
        return


def _request_id() -> str:
    # DynamoDB's request ids are 52 characters of [A-Z0-9].
    return base64.b32encode(random.randbytes(35)).decode("ascii")[:52]


class ScanServer:
    """A DynamoDB endpoint on 127.0.0.1 serving the given tables (see the module docstring).

    ``start()`` returns the endpoint URL; ``stop()`` ends it; ``with ScanServer(...) as s:`` does both.
    Faults (``latency``, ``throttle_rate``, ``error_rate``, ``crc_error_rate``) and tables can change
    while it runs; ``stats(table)`` reads the counters. Throttles, 500s and bad CRCs only hit Scan
    requests of existing tables, drawn from a random generator seeded by ``seed`` (reset by
    ``reset_faults``), so a sequential client sees the same faults on every run.
    """

    def __init__(self, tables: Iterable[TableSpec] = (), *, port: int = 0, seed: int = 0) -> None:
        self._port = port
        self._seed = seed
        self._lock = threading.Lock()
        self._tables: dict[str, _Table] = {}
        self._stats: dict[str, TableStats] = {}
        self._rng = random.Random(seed)
        self._latency = 0.0
        self._throttle_rate = 0.0
        self._error_rate = 0.0
        self._crc_error_rate = 0.0
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        for spec in tables:
            self.add_table(spec)

    # Tables ------------------------------------------------------------------------------------

    def add_table(self, spec: TableSpec) -> None:
        """Serve a new table; its items are generated on first use (or by ``warm``)."""
        with self._lock:
            if spec.name in self._tables:
                raise ValueError(f"table {spec.name!r} already exists")
            self._tables[spec.name] = _Table(spec)
            self._stats[spec.name] = TableStats()

    def remove_table(self, name: str) -> None:
        with self._lock:
            del self._tables[name]
            del self._stats[name]

    def table_names(self) -> list[str]:
        with self._lock:
            return sorted(self._tables)

    def warm(self, *names: str) -> None:
        """Generate the items of the named tables (all when none is named) now rather than on first use."""
        with self._lock:
            tables = [self._tables[n] for n in names] if names else list(self._tables.values())
        for table in tables:
            table.build()

    def table_size(self, name: str) -> int:
        """The table's bytes of items (what DescribeTable reports as TableSizeBytes)."""
        with self._lock:
            table = self._tables[name]
        table.build()
        return table.size

    # Faults and counters -----------------------------------------------------------------------

    @property
    def latency(self) -> float:
        """Seconds added before every request is answered."""
        return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        self._latency = float(seconds)

    @property
    def throttle_rate(self) -> float:
        """Fraction of Scan requests answered 400 ProvisionedThroughputExceededException."""
        return self._throttle_rate

    @throttle_rate.setter
    def throttle_rate(self, rate: float) -> None:
        self.set_faults(throttle_rate=rate)

    @property
    def error_rate(self) -> float:
        """Fraction of Scan requests answered 500 InternalServerError."""
        return self._error_rate

    @error_rate.setter
    def error_rate(self, rate: float) -> None:
        self.set_faults(error_rate=rate)

    @property
    def crc_error_rate(self) -> float:
        """Fraction of Scan pages sent with a wrong x-amz-crc32 header (botocore retries those)."""
        return self._crc_error_rate

    @crc_error_rate.setter
    def crc_error_rate(self, rate: float) -> None:
        self.set_faults(crc_error_rate=rate)

    def set_faults(
        self,
        *,
        latency: float | None = None,
        throttle_rate: float | None = None,
        error_rate: float | None = None,
        crc_error_rate: float | None = None,
        seed: int | None = None,
    ) -> None:
        """Change some faults at once; the rates must add up to at most 1."""
        with self._lock:
            rates = [
                self._throttle_rate if throttle_rate is None else float(throttle_rate),
                self._error_rate if error_rate is None else float(error_rate),
                self._crc_error_rate if crc_error_rate is None else float(crc_error_rate),
            ]
            if any(not 0.0 <= r <= 1.0 for r in rates) or sum(rates) > 1.0:
                raise ValueError(f"fault rates must be in [0, 1] and add up to at most 1: {rates}")
            if latency is not None:
                self.latency = latency
            self._throttle_rate, self._error_rate, self._crc_error_rate = rates
            if seed is not None:
                self._rng.seed(seed)

    def reset_faults(self) -> None:
        """No latency, no faults, and the fault generator back at its seed."""
        with self._lock:
            self._latency = self._throttle_rate = self._error_rate = self._crc_error_rate = 0.0
            self._rng.seed(self._seed)

    def stats(self, table: str) -> TableStats:
        """A snapshot of one table's counters."""
        with self._lock:
            return self._stats[table]

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = dict.fromkeys(self._stats, TableStats())

    def _count(self, table: str, **deltas: int) -> None:
        with self._lock:
            old = self._stats.get(table)
            if old is not None:
                self._stats[table] = replace(old, **{k: getattr(old, k) + v for k, v in deltas.items()})

    # Lifecycle ---------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the server is not running")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> str:
        """Bind 127.0.0.1 (a free port unless one was given), serve in a background thread, return the URL."""
        if self._httpd is not None:
            raise RuntimeError("the server is already running")
        self._httpd = _HTTPServer(("127.0.0.1", self._port), self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="scan-server", daemon=True
        )
        self._thread.start()
        return self.endpoint

    def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        httpd.shutdown()
        # Keep-alive connections would otherwise keep their threads waiting for another request.
        with httpd.connections_lock:
            for conn in httpd.connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        thread.join()
        self._httpd = self._thread = None

    def __enter__(self) -> ScanServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # Requests ----------------------------------------------------------------------------------

    def dispatch(self, target: str, body: bytes) -> _Reply:
        """Answer one request: ``X-Amz-Target`` and the JSON body in, status and body out."""
        if self._latency:
            time.sleep(self._latency)
        operation = target[len(_TARGET_PREFIX) :] if target.startswith(_TARGET_PREFIX) else ""
        handler = {"Scan": self._scan, "DescribeTable": self._describe_table, "ListTables": self._list_tables}.get(
            operation
        )
        try:
            if handler is None:
                raise DynamoError(400, _CORAL, "UnknownOperationException", "")
            try:
                req = orjson.loads(body)
            except orjson.JSONDecodeError as e:
                raise _serialization(f"Invalid JSON: {e}") from e
            if not isinstance(req, dict):
                raise _serialization("Start of structure or map found where not expected")
            return handler(req)
        except DynamoError as e:
            return _Reply(e.status, e.body)
        except Exception as e:
            # A bug in this server: answer like DynamoDB's 500 (so clients retry) and show where.
            traceback.print_exc()
            return _Reply(500, DynamoError(500, _DYNAMO, "InternalServerError", f"test server bug: {e!r}").body)

    def _table(self, name: str, message: str) -> _Table:
        with self._lock:
            table = self._tables.get(name)
            if table is None:
                raise DynamoError(400, _DYNAMO, "ResourceNotFoundException", message)
            old = self._stats[name]
            self._stats[name] = replace(old, requests=old.requests + 1)
        table.build()
        return table

    def _list_tables(self, req: dict[str, Any]) -> _Reply:
        limit = _int(req, "Limit")
        start = _str(req, "ExclusiveStartTableName")
        if limit is not None:
            _at_least(limit, 1, "limit")
            _at_most(limit, 100, "limit")
        names = self.table_names()
        if start is not None:
            names = names[bisect.bisect_right(names, start) :]
        page = names[: limit or 100]
        out: dict[str, Any] = {"TableNames": page}
        if len(names) > len(page):
            out["LastEvaluatedTableName"] = page[-1]
        return _Reply(200, orjson.dumps(out))

    def _describe_table(self, req: dict[str, Any]) -> _Reply:
        name = _table_name(req)
        table = self._table(name, f"Requested resource not found: Table: {name} not found")
        return _Reply(200, orjson.dumps(table.describe()))

    def _scan(self, req: dict[str, Any]) -> _Reply:
        scan = _parse_scan(req)
        table = self._table(scan.table, "Requested resource not found")
        ordering = table.ordering(scan.total, scan.segment)
        start = 0
        if scan.start_key is not None:
            start = ordering.position_after(self._start_index(table, scan.start_key, scan.total, scan.segment))
        bad_crc = self._draw_fault(table)
        body, count = _page(table, ordering, start, scan)
        self._count(scan.table, items=count, bytes=len(body), crc_errors=int(bad_crc))
        return _Reply(200, body, bad_crc)

    def _draw_fault(self, table: _Table) -> bool:
        """Raise the throttle or 500 this request draws; True when its CRC header is to be wrong."""
        # Drawn only for requests that are valid, so the same valid request sequence meets the same
        # faults whatever else a test sent.
        with self._lock:
            draw = self._rng.random()
            throttle, error, crc = self._throttle_rate, self._error_rate, self._crc_error_rate
        name = table.spec.name
        if draw < throttle:
            self._count(name, throttles=1)
            limit = (
                "ProvisionedThroughputExceeded" if isinstance(table.spec.billing, int) else "KeyRangeThroughputExceeded"
            )
            raise DynamoError(
                400,
                _DYNAMO,
                "ProvisionedThroughputExceededException",
                "The level of configured provisioned throughput for the table was exceeded. "
                "Consider increasing your provisioning level with the UpdateTable API.",
                ThrottlingReasons=[{"reason": f"TableRead{limit}", "resource": table.arn}],
            )
        if draw < throttle + error:
            self._count(name, errors=1)
            raise DynamoError(500, _DYNAMO, "InternalServerError", "Internal server error")
        return draw < throttle + error + crc

    @staticmethod
    def _start_index(table: _Table, start_key: dict[str, Any], total: int, segment: int) -> int:
        schema = table.spec.key_schema
        key = tuple(_key_part(start_key.get(attr), type_) for attr, type_ in schema)
        if len(start_key) != len(schema) or None in key:
            raise _validation(
                "The provided starting key is invalid: The provided key element does not match the schema"
            )
        index = table.positions.get(key)
        if index is None:
            raise _validation(
                "The provided starting key is invalid: the podyn-fast test server only resumes from the key "
                "of an existing item"
            )
        if table.hashes[index] % total != segment:
            raise _validation(
                f"The provided starting key is invalid: it belongs to another segment than {segment} of {total}"
            )
        return index


# ---------------------------------------------------------------------------------------------
# Standalone


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.servers.scan", description="Serve a DynamoDB table 'bench' of typical items."
    )
    parser.add_argument("--items", type=int, default=100_000, help="number of items (default 100000)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    args = parser.parse_args(argv)

    server = ScanServer([TableSpec("bench", TYPICAL_KEYS, typical_item, args.items)], port=args.port)
    started = time.perf_counter()
    # Generate before announcing the endpoint, so a benchmark does not time item generation.
    server.warm()
    generated = time.perf_counter() - started
    server.latency = args.latency
    endpoint = server.start()
    size = server.table_size("bench")
    print(
        f"{endpoint}  (table bench: {args.items} items, {size / 1e6:.1f} MB, generated in {generated:.1f} s)",
        flush=True,
    )

    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stopping.wait(0.5):
        pass
    server.stop()


if __name__ == "__main__":
    main()
