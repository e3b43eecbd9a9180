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

Like DynamoDB, it serves items in the hash order of their partition key (a stable hash of the key's
text; the items of one partition key by their sort key), never in key order, and a segment of
``TotalSegments`` is one contiguous range of that hash space, so segments differ in size.

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
import random
import signal
import threading
import time
import zlib
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from types import FrameType
from typing import Any, Final, NamedTuple

import orjson

from tests.servers.protocol import (
    ACCOUNT,
    DYNAMO_PREFIX,
    MAX_TOTAL_SEGMENTS,
    REGION,
    DynamoError,
    Handler,
    Reply,
    ScanParams,
    ServerBase,
    Stats,
    check_key_schema,
    check_scan,
    consumed_capacity,
    key_schema_json,
    list_tables,
    mix,
    not_found,
    scan_params,
    serialization,
    table_description,
    table_name,
    throughput_exceeded,
    validation,
)

# The public names, those from protocol included: they were defined here before it was shared.
__all__ = [
    "ACCOUNT",
    "MAX_TOTAL_SEGMENTS",
    "PAGE_BYTES",
    "REGION",
    "TYPICAL_KEYS",
    "DynamoError",
    "IndexSpec",
    "ScanServer",
    "TableSpec",
    "TableStats",
    "all_types_item",
    "main",
    "typical_item",
]

PAGE_BYTES: Final = 1_048_576
"""The most item bytes one Scan page carries."""
TYPICAL_KEYS: Final = (("pk", "S"), ("sk", "N"))
"""The key schema of ``typical_item`` and ``all_types_item``."""

# A fixed creation time keeps DescribeTable answers reproducible.
_CREATED = 1_700_000_000.0
_SELECT = ("SPECIFIC_ATTRIBUTES", "COUNT", "ALL_ATTRIBUTES", "ALL_PROJECTED_ATTRIBUTES")

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
    described_size: int | None = None
    """What DescribeTable reports as TableSizeBytes, if not the items' size: DynamoDB refreshes it
    about every six hours, so it may be far from what a Scan reads."""

    def __post_init__(self) -> None:
        # Tuples, so a spec cannot change under a running server.
        object.__setattr__(self, "key_schema", tuple((a, t) for a, t in self.key_schema))
        object.__setattr__(self, "gsis", tuple((n, tuple(k)) for n, k in self.gsis))
        object.__setattr__(self, "lsis", tuple((n, tuple(k)) for n, k in self.lsis))
        if not 3 <= len(self.name) <= 255 or not all(c.isascii() and (c.isalnum() or c in "_.-") for c in self.name):
            raise ValueError(f"invalid table name {self.name!r}")
        check_key_schema(self.name, self.key_schema)
        if self.count < 0:
            raise ValueError(f"{self.name}: negative item count")
        if isinstance(self.billing, bool) or not (
            self.billing == "PAY_PER_REQUEST" or (isinstance(self.billing, int) and self.billing > 0)
        ):
            raise ValueError(f"{self.name}: billing is 'PAY_PER_REQUEST' or a positive read capacity")
        for index, schema in self.indexes():
            check_key_schema(f"{self.name}/{index}", schema)
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


@dataclass(frozen=True)
class TableStats(Stats):
    """What one table served.

    ``requests`` counts the valid DescribeTable and Scan requests naming the table, faulty answers
    included; ``items`` and ``bytes`` (response bodies) count the Scan pages served, retries included.
    """

    bytes: int = 0


# ---------------------------------------------------------------------------------------------
# Item generators


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
    x = mix(i)
    y = mix(x ^ i)
    z = mix(y) | (mix(y ^ x) << 64)
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


# Text as real tables hold it: raw UTF-8 in several scripts, JSON escapes, and \u escapes.
_RICH_TEXT = (
    "Café Zürich, Straße 5",
    "東京都渋谷区 1-2-3",
    "Łódź, ул. Пушкина",
    'said \\"hello\\" and left',
    "line one\\nline two\\ttabbed",
    "emoji \\ud83d\\ude00 and \\u00e9t\\u00e9",
    "path C:\\\\data\\\\x",
    "plain ascii words here",
)
_RICH_WORDS = ("naïve", "façade", "日本", "данные", "λόγος", "smørrebrød", "jalapeño", "ok")


def rich_item(i: int) -> bytes:
    """A ≈800-byte item as rich as real ones: text with non-ASCII, escapes and \\u escapes, 38-digit
    and exponent numbers, a list of maps nested three deep, string and number sets, binary, BOOL
    and NULL; deterministic from ``i``, keys as ``typical_item``'s (``balance`` included, for the
    benchmarks' check)."""
    x = mix(i)
    y = mix(x ^ i)
    z = mix(y)
    digits = f"{1 + x % 9}{x:020d}{y:020d}"[:38]
    blob = base64.b64encode(x.to_bytes(8, "little") + y.to_bytes(8, "little")).decode()
    words = '","'.join(sorted({_RICH_WORDS[(z >> (3 * k)) & 7] for k in range(1 + (z & 3))}))
    return (
        f'{{"pk":{{"S":"user#{i // 4:08d}"}},"sk":{{"N":"{i % 4}"}},'
        f'"name":{{"S":"{_FIRST[x & 15]} {_LAST[(x >> 4) & 15]}"}},'
        f'"address":{{"S":"{_RICH_TEXT[(x >> 8) & 7]}"}},'
        f'"big":{{"N":"{digits}"}},"tiny":{{"N":"{1 + (y >> 3) % 997}E-{(y >> 13) % 120}"}},'
        f'"balance":{{"N":"{_cents(((x ^ y) >> 20) % 2_000_000 - 1_000_000)}"}},'
        f'"verified":{{"BOOL":{"true" if y & 1 else "false"}}},"deleted_at":{{"NULL":true}},'
        f'"tags":{{"SS":["{words}"]}},"scores":{{"NS":["{x % 1000}","{1000 + y % 1000}.5","-{1 + z % 77}"]}},'
        f'"avatar":{{"B":"{blob}"}},'
        f'"orders":{{"L":['
        f'{{"M":{{"id":{{"S":"o{x % 100000}"}},"total":{{"N":"{_cents(x % 100000)}"}},'
        f'"items":{{"L":[{{"M":{{"sku":{{"S":"{_RICH_WORDS[x & 7]}-{y % 100}"}},"qty":{{"N":"{1 + y % 9}"}}}}}},'
        f'{{"M":{{"sku":{{"S":"{_RICH_WORDS[y & 7]}"}},"qty":{{"N":"1"}},"gift":{{"BOOL":true}}}}}}]}}}}}},'
        f'{{"M":{{"id":{{"S":"o{y % 100000}"}},"total":{{"N":"{_cents(y % 100000)}"}},"items":{{"L":[]}}}}}}]}},'
        f'"prefs":{{"M":{{"theme":{{"S":"{_THEMES[(y >> 24) & 3]}"}},"lang":{{"S":"{_LANGS[(y >> 26) & 7]}"}},'
        f'"limits":{{"M":{{"daily":{{"N":"{z % 5000}"}},"none":{{"NULL":true}}}}}}}}}},'
        f'"created":{{"N":"{1_600_000_000 + (y >> 30) % 100_000_000}"}}}}'
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


class _Segment(NamedTuple):
    """A segment: positions ``lo`` to ``hi`` (excluded) of the table's serving order, the items
    whose partition keys hash into its share of the hash space."""

    lo: int
    hi: int


def _segment_of(hash_: int, total: int) -> int:
    """The segment of ``total`` that a 32-bit partition-key hash falls in: segments are contiguous
    ranges of the hash space, as DynamoDB's partitions are."""
    return (hash_ * total) >> 32


def _first_hash(segment: int, total: int) -> int:
    """The smallest hash of ``segment`` of ``total`` (ceil(segment · 2³² / total))."""
    return -(-(segment << 32) // total)


class _Table:
    """A TableSpec's items, generated on first use and cached with what Scan needs to cut pages."""

    def __init__(self, spec: TableSpec) -> None:
        self.spec = spec
        self.arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{spec.name}"
        self._lock = threading.Lock()
        self._built = False
        self.items: list[bytes] = []
        self.hashes: array[int] = array("q")
        # Canonical key -> item index, to resume after an ExclusiveStartKey.
        self.positions: dict[tuple[object, ...], int] = {}
        self.index_stats: dict[str, tuple[int, int]] = {}
        # The serving order: item indices by the hash of their partition key (then their sort
        # key), as DynamoDB returns them; an item's position in it, the hashes and the running
        # byte totals (cum[k]: bytes of the first k items) in that order.
        self.order: array[int] = array("q")
        self.position_of: array[int] = array("q")
        self.ordered_hashes: array[int] = array("q")
        self.cum: array[int] = array("q", [0])

    @property
    def size(self) -> int:
        return self.cum[-1]

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
            sizes.append(size)
            items.append(raw)
            for name, attrs in index_attrs:
                if all(a in doc for a in attrs):
                    index_counts[name][0] += 1
                    index_counts[name][1] += size
        # Items of one partition key (one hash) by their sort key, as DynamoDB keeps them.
        keys = {i: k for k, i in positions.items()}
        order = sorted(range(len(items)), key=lambda i: (hashes[i], keys[i][1:]))
        position_of = array("q", bytes(8 * len(items)))
        cum, running = array("q", [0]), 0
        for at, i in enumerate(order):
            position_of[i] = at
            running += sizes[i]
            cum.append(running)
        self.items, self.hashes, self.positions = items, hashes, positions
        self.order, self.position_of, self.cum = array("q", order), position_of, cum
        self.ordered_hashes = array("q", (hashes[i] for i in order))
        self.index_stats = {name: (n, b) for name, (n, b) in index_counts.items()}

    def segment(self, total: int, segment: int) -> _Segment:
        """Where ``segment`` of ``total`` lies in the serving order."""
        hashes = self.ordered_hashes
        lo = bisect.bisect_left(hashes, _first_hash(segment, total))
        return _Segment(lo, bisect.bisect_left(hashes, _first_hash(segment + 1, total), lo=lo))

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
        table = table_description(
            name=spec.name,
            arn=self.arn,
            key_schema=spec.key_schema,
            attributes=spec.attribute_definitions(),
            created=_CREATED,
            throughput=throughput,
            size=self.size if spec.described_size is None else spec.described_size,
            count=len(self.items),
        )
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
                "KeySchema": key_schema_json(schema),
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


# ---------------------------------------------------------------------------------------------
# Request parsing


class _Scan(NamedTuple):
    """A validated Scan request: its parameters, and what this server makes of them."""

    params: ScanParams
    segment: int
    total: int
    count_only: bool
    start_key: dict[str, Any] | None


def _parse_scan(req: dict[str, Any]) -> _Scan:
    """Check a Scan request as DynamoDB does, with its messages, in its order."""
    params = scan_params(req)
    start_key = req.get("ExclusiveStartKey")
    if start_key is not None and not isinstance(start_key, dict):
        raise serialization("ExclusiveStartKey must be a map")
    check_scan(params, _SELECT)
    if params.select not in (None, "ALL_ATTRIBUTES", "COUNT"):
        raise validation(f"The podyn-fast test server does not support Select={params.select}")
    return _Scan(params, params.segment or 0, params.total or 1, params.select == "COUNT", start_key)


def _page(table: _Table, segment: _Segment, start: int, scan: _Scan) -> tuple[bytes, int]:
    """The body of the Scan page starting at position ``start`` of the serving order (within
    ``segment``), and its item count."""
    cum = table.cum
    # The last item whose running total stays within 1 MB of the page's start; at least one item.
    end = bisect.bisect_right(cum, cum[start] + PAGE_BYTES, lo=start, hi=segment.hi + 1) - 1
    end = max(end, min(start + 1, segment.hi))
    stopped = end < segment.hi
    limit = scan.params.limit
    if limit is not None and end - start >= limit:
        end = start + limit
        # Like DynamoDB: a page cut by Limit names its last key even when nothing follows.
        stopped = True
    count = end - start
    parts = []
    consumed = consumed_capacity(table.spec.name, cum[end] - cum[start], scan.params)
    if consumed is not None:
        parts.append(b'"ConsumedCapacity":' + orjson.dumps(consumed))
    parts.append(b'"Count":%d' % count)
    if not scan.count_only:
        items = table.items
        parts.append(b'"Items":[' + b",".join([items[i] for i in table.order[start:end]]) + b"]")
    if stopped and count:
        last = orjson.loads(table.items[table.order[end - 1]])
        key = {attr: last[attr] for attr, _ in table.spec.key_schema}
        parts.append(b'"LastEvaluatedKey":' + orjson.dumps(key))
    parts.append(b'"ScannedCount":%d' % count)
    # The fields in DynamoDB's (alphabetical) order: Items is not the last, so a reader cannot stop
    # at it.
    return b"{" + b",".join(parts) + b"}", count


# ---------------------------------------------------------------------------------------------
# The server


class ScanServer(ServerBase[TableStats]):
    """A DynamoDB endpoint on 127.0.0.1 serving the given tables (see the module docstring).

    ``start()`` returns the endpoint URL; ``stop()`` ends it; ``with ScanServer(...) as s:`` does both.
    Faults (``latency``, ``throttle_rate``, ``error_rate``, ``crc_error_rate``) and tables can change
    while it runs; ``stats(table)`` reads the counters. Throttles, 500s and bad CRCs only hit Scan
    requests of existing tables, drawn from a random generator seeded by ``seed`` (reset by
    ``reset_faults``), so a sequential client sees the same faults on every run.
    """

    _thread_name = "scan-server"

    def __init__(self, tables: Iterable[TableSpec] = (), *, port: int = 0, seed: int = 0) -> None:
        super().__init__(port=port, seed=seed, lock=threading.Lock(), stats=TableStats)
        self._tables: dict[str, _Table] = {}
        for spec in tables:
            self.add_table(spec)
        self._stall_until = self._stall_seconds = 0.0
        self._stall_after = 0
        # Set by reset_faults: a request stalled by a test ends with it, rather than wake up in a
        # later test and count in its stats.
        self._unstalled = threading.Event()
        self.bad_body_rate = 0.0
        """Fraction of Scan answers whose body is cut short (with a CRC header that matches the cut
        body, as a buggy server or proxy would send): the client must ask again."""
        self.bad_bodies_served = 0
        self._bad_body_rng = random.Random(seed)

    def stall(self, seconds: float, after_pages: int = 0) -> None:
        """Answer no Scan request for ``seconds``, once ``after_pages`` more have been answered:
        each one waits until then (a stalled endpoint)."""
        with self._lock:
            self._stall_after, self._stall_seconds = after_pages, seconds
            self._stall_until = time.monotonic() + seconds if after_pages == 0 else 0.0
            self._unstalled.clear()

    def reset_faults(self) -> None:
        super().reset_faults()
        with self._lock:
            self._stall_until = self._stall_seconds = 0.0
            self._stall_after = 0
            self._unstalled.set()
        self.bad_body_rate = 0.0

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

    def scan_order(self, name: str) -> Sequence[int]:
        """The item positions of the table in the order a Scan serves them (its segments, for any
        TotalSegments, one after the other): for a benchmark's ceiling to load the same rows in the
        same order."""
        with self._lock:
            table = self._tables[name]
        table.build()
        return table.order

    def table_size(self, name: str) -> int:
        """The table's bytes of items (what DescribeTable reports as TableSizeBytes)."""
        with self._lock:
            table = self._tables[name]
        table.build()
        return table.size

    # Requests ----------------------------------------------------------------------------------

    def _operations(self) -> dict[str, Handler]:
        return {
            DYNAMO_PREFIX + "Scan": self._scan,
            DYNAMO_PREFIX + "DescribeTable": self._describe_table,
            DYNAMO_PREFIX + "ListTables": self._list_tables,
        }

    def _table(self, name: str, message: str) -> _Table:
        with self._lock:
            table = self._tables.get(name)
            if table is None:
                raise not_found(message)
            old = self._stats[name]
            self._stats[name] = replace(old, requests=old.requests + 1)
        table.build()
        return table

    def _list_tables(self, req: dict[str, Any]) -> Reply:
        return list_tables(req, self.table_names())

    def _describe_table(self, req: dict[str, Any]) -> Reply:
        name = table_name(req)
        table = self._table(name, f"Requested resource not found: Table: {name} not found")
        return Reply(200, orjson.dumps(table.describe()))

    def _scan(self, req: dict[str, Any]) -> Reply:
        with self._lock:
            if self._stall_after > 0:
                self._stall_after -= 1
            elif self._stall_seconds:
                self._stall_until, self._stall_seconds = time.monotonic() + self._stall_seconds, 0.0
            stalled = self._stall_until - time.monotonic()
        if stalled > 0:
            self._unstalled.wait(stalled)
        scan = _parse_scan(req)
        table = self._table(scan.params.table, "Requested resource not found")
        segment = table.segment(scan.total, scan.segment)
        start = segment.lo
        if scan.start_key is not None:
            start = table.position_of[self._start_index(table, scan.start_key, scan.total, scan.segment)] + 1
        bad_crc = self._draw_fault(table.spec.name, lambda: self._throttled(table))
        body, count = _page(table, segment, start, scan)
        self._count(scan.params.table, items=count, bytes=len(body), crc_errors=int(bad_crc))
        if not bad_crc and self.bad_body_rate and self._bad_body_rng.random() < self.bad_body_rate:
            self.bad_bodies_served += 1
            return Reply(200, body[: len(body) // 2])
        return Reply(200, body, bad_crc)

    @staticmethod
    def _throttled(table: _Table) -> DynamoError:
        limit = "ProvisionedThroughputExceeded" if isinstance(table.spec.billing, int) else "KeyRangeThroughputExceeded"
        return throughput_exceeded(ThrottlingReasons=[{"reason": f"TableRead{limit}", "resource": table.arn}])

    @staticmethod
    def _start_index(table: _Table, start_key: dict[str, Any], total: int, segment: int) -> int:
        schema = table.spec.key_schema
        key = tuple(_key_part(start_key.get(attr), type_) for attr, type_ in schema)
        if len(start_key) != len(schema) or None in key:
            raise validation("The provided starting key is invalid: The provided key element does not match the schema")
        index = table.positions.get(key)
        if index is None:
            raise validation(
                "The provided starting key is invalid: the podyn-fast test server only resumes from the key "
                "of an existing item"
            )
        if _segment_of(table.hashes[index], total) != segment:
            raise validation(
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
