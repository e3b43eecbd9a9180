"""A mutable DynamoDB with DynamoDB Streams, over real HTTP: for testing the stream follower.

moto keeps one shard per table that never splits or closes, never expires iterators or trims data,
emits records for writes that change nothing and cannot re-enable a stream (see docs/dynamodb.md). This
server does what DynamoDB does in those places, so a follower is tested against the hard parts:
shard lineage, closed shards, expiry, trimming, new streams.

Both services answer on one endpoint, told apart by ``X-Amz-Target``: ``DynamoDB_20120810.*``
(PutItem, DeleteItem, GetItem, BatchGetItem, Scan, DescribeTable, ListTables) and
``DynamoDBStreams_20120810.*`` (ListStreams, DescribeStream, GetShardIterator, GetRecords). botocore
clients for ``dynamodb`` and ``dynamodbstreams`` work unchanged with ``endpoint_url``; signatures
are not checked. Tables are created and written through the Python API too (``put``, ``update``,
``delete``), each change producing one stream record exactly as an HTTP write would.

Streams as DynamoDB has them:

- A stream starts with ``shards`` open shards. A record goes to the open shard its partition key
  hashes to, so one key's records stay in order in one shard. ``split`` closes every open shard and
  gives it children (``ParentShardId``); a key's later records go to one child of its old shard, so
  reading parents before children gives every key's changes in order.
- Sequence numbers are decimal strings of 21 to 40 digits that only compare as integers, within a
  lineage: each shard starts at its own magnitude (root shards differ in length; children are
  longer than their parents) and early shards grow a digit after 5,000 records of the stream, so
  comparing them as text goes wrong. Numbers from different lineages are not comparable.
- GetRecords on a closed shard read to its end returns no ``NextShardIterator`` (together with the
  last records when they fit); an open shard always gives one, with or without records.
- Iterators expire after ``iterator_ttl`` seconds; records older than ``retention`` seconds are
  trimmed (and closed shards that old vanish); ``trim`` trims on demand. Reading before the trim
  point is a TrimmedDataAccessException.
- A put or update that changes nothing writes no record; deleting a missing item neither.
- ``new_stream`` disables and re-enables the stream: a new ARN and label, the old stream's shards
  all closed and still readable.

Where it knowingly differs from DynamoDB:

- Sizes (the 1 MB pages of Scan and GetRecords, the 400 KB item limit, ``SizeBytes``,
  ``TableSizeBytes``) are JSON lengths, not DynamoDB's binary sizes.
- Numbers are normalised as DynamoDB returns them (plain decimal, no exponent, no trailing zeros);
  binary is re-encoded as canonical base64.
- Shards split only when told (``split``, ``auto_split_every``), not every few hours.
- ``GetRecords`` with ``Limit`` over 1000 is a ValidationException (the service's exact answer is
  not documented); throttled GetRecords calls are LimitExceededException, as the Kinesis adapter
  expects from DynamoDB Streams (botocore's standard retry mode retries it as a throttle; legacy
  mode does not).
- Expressions, conditions, projections, Query, UpdateItem over HTTP and secondary-index reads are
  not served: they are refused (ValidationException or UnknownOperationException), never ignored.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import email.utils
import random
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Context, Decimal
from typing import Any, Final

import orjson

from tests.servers.exports import ExportService
from tests.servers.protocol import (
    ACCOUNT,
    DYNAMO,
    DYNAMO_PREFIX,
    REGION,
    DynamoError,
    Handler,
    Reply,
    ServerBase,
    Stats,
    bool_param,
    check_enum,
    check_key_schema,
    check_params,
    check_range,
    check_scan,
    consumed_capacity,
    int_param,
    invalid,
    key_schema_json,
    list_tables,
    mix,
    not_found,
    required,
    scan_params,
    serialization,
    str_param,
    table_description,
    table_name,
    throughput_exceeded,
    validation,
)

# The public names, those from protocol included: they were defined here before it was shared.
__all__ = [
    "ACCOUNT",
    "BATCH_GET_BYTES",
    "BATCH_GET_KEYS",
    "DEFAULT_KEYS",
    "ITEM_BYTES",
    "ITERATOR_TTL",
    "MAX_GET_RECORDS",
    "PAGE_BYTES",
    "REGION",
    "RETENTION",
    "VIEW_TYPES",
    "DynamoError",
    "Key",
    "KeySchema",
    "StreamsServer",
    "StreamsStats",
    "normalize_number",
]

DEFAULT_KEYS: Final = (("pk", "S"), ("sk", "N"))
VIEW_TYPES: Final = ("NEW_AND_OLD_IMAGES", "NEW_IMAGE", "OLD_IMAGE", "KEYS_ONLY")
PAGE_BYTES: Final = 1_048_576
"""The most bytes of items (records) one Scan (GetRecords) answer carries."""
ITEM_BYTES: Final = 400 * 1024
MAX_GET_RECORDS: Final = 1000
BATCH_GET_KEYS: Final = 100
BATCH_GET_BYTES: Final = 16 * 1024 * 1024
ITERATOR_TTL: Final = 900.0
RETENTION: Final = 86_400.0

_STREAMS_PREFIX = "DynamoDBStreams_20120810."
_MAX_DEPTH = 32
# Decimal's default context keeps 28 digits; DynamoDB numbers have up to 38.
_DECIMALS = Context(prec=200)
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
# Sequence numbers: shard j of a stream counts from 10**(21 + j) - _ROLLOVER (capped at 39 digits),
# plus the stream's record counter. Early shards thus gain a digit mid-shard.
_ROLLOVER = 5_000
_MAX_EXPONENT = 39
_ITERATOR_TYPES = ("TRIM_HORIZON", "LATEST", "AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER", "AT_TIMESTAMP")
_FAULT_OPERATIONS = frozenset({"Scan", "GetRecords"})

KeySchema = Sequence[tuple[str, str]]
Key = tuple[str, ...]
"""An item's key as the text of its key values, in key-schema order (numbers normalised)."""
_Position = tuple[int, tuple[Any, ...], Key]


# ---------------------------------------------------------------------------------------------
# Attribute values


def normalize_number(text: object) -> str:
    """A DynamoDB number as DynamoDB returns it: plain decimal, no exponent, no trailing zeros, no -0.

    Raises a ValidationException for what DynamoDB refuses: not a number, more than 38 significant
    digits, magnitudes beyond 1E-130 … 9.99…E+125.
    """
    if not isinstance(text, str) or not _NUMBER.fullmatch(text):
        raise validation("A value provided cannot be converted into a number")
    number = Decimal(text)
    if number.is_zero():
        return "0"
    normal = number.normalize(_DECIMALS)
    if len(normal.as_tuple().digits) > 38:
        raise validation("Attempting to store more than 38 significant digits in a Number")
    if normal.adjusted() > 125:
        raise validation("Number overflow. Attempting to store a number with magnitude larger than supported range")
    if normal.adjusted() < -130:
        raise validation("Number underflow. Attempting to store a number with magnitude smaller than supported range")
    return format(normal, "f")


def _binary(text: object) -> tuple[str, bytes]:
    if not isinstance(text, str):
        raise serialization("Binary values are base64 strings")
    try:
        data = base64.b64decode(text, validate=True)
    except binascii.Error as e:
        raise serialization(f"Base64 encoded binary value is invalid: {e}") from e
    return base64.b64encode(data).decode("ascii"), data


def _value(value: object, depth: int = 1) -> dict[str, Any]:
    """A checked, normalised copy of one attribute value (DynamoDB JSON)."""
    if depth > _MAX_DEPTH:
        raise validation("Nesting Levels have exceeded supported limits")
    if not isinstance(value, dict) or len(value) != 1:
        raise validation(
            "Supplied AttributeValue has more than one datatypes set, must contain exactly one of the supported "
            "datatypes"
            if isinstance(value, dict) and value
            else "Supplied AttributeValue is empty, must contain exactly one of the supported datatypes"
        )
    ((tag, inner),) = value.items()
    check = _VALUE_CHECKS.get(tag)
    if check is None:
        raise serialization(f"Unknown attribute value type {tag!r}")
    return {tag: check(inner, depth)}


def _typed(inner: object, kind: type, tag: str) -> Any:
    if not isinstance(inner, kind):
        raise serialization(f"{tag} values are {kind.__name__} values")
    return inner


def _a_set(inner: object, tag: str, each: Callable[[object], tuple[str, object]]) -> list[str]:
    """A set's members, normalised: non-empty, and no two equal (numbers by value, binary by bytes)."""
    if not isinstance(inner, list):
        raise serialization(f"{tag} values are lists")
    if not inner:
        raise invalid(f"An {tag.lower()} may not be empty")
    members = [each(v) for v in inner]
    if len({identity for _, identity in members}) != len(members):
        raise invalid(f"Input collection {inner!r} of type {tag} contains duplicates.")
    return [text for text, _ in members]


def _string_member(value: object) -> tuple[str, object]:
    text = _typed(value, str, "SS")
    return text, text


def _number_member(value: object) -> tuple[str, object]:
    text = normalize_number(value)
    return text, text


def _null(inner: object, depth: int) -> bool:
    if inner is not True:
        raise invalid("Null attribute value types must have the value of true")
    return True


_VALUE_CHECKS: dict[str, Callable[[Any, int], Any]] = {
    "S": lambda inner, depth: _typed(inner, str, "S"),
    "N": lambda inner, depth: normalize_number(inner),
    "B": lambda inner, depth: _binary(inner)[0],
    "BOOL": lambda inner, depth: _typed(inner, bool, "BOOL"),
    "NULL": _null,
    "SS": lambda inner, depth: _a_set(inner, "SS", _string_member),
    "NS": lambda inner, depth: _a_set(inner, "NS", _number_member),
    "BS": lambda inner, depth: _a_set(inner, "BS", _binary),
    "L": lambda inner, depth: [_value(v, depth + 1) for v in _typed(inner, list, "L")],
    "M": lambda inner, depth: {_name(k): _value(v, depth + 1) for k, v in _typed(inner, dict, "M").items()},
}


def _name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise validation("Empty attribute name")
    return name


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two normalised items (or values) are equal as DynamoDB sees them: sets are unordered."""
    return _canonical({"M": a}) == _canonical({"M": b})


def _canonical(value: dict[str, Any]) -> object:
    ((tag, inner),) = value.items()
    if tag in ("SS", "NS", "BS"):
        return tag, frozenset(inner)
    if tag == "L":
        return tag, [_canonical(v) for v in inner]
    if tag == "M":
        return tag, {k: _canonical(v) for k, v in inner.items()}
    return tag, inner


def _order_part(text: str, type_: str) -> object:
    """A key value in a form that sorts as DynamoDB sorts keys (numbers by value, binary by bytes)."""
    if type_ == "N":
        return int(text) if text.lstrip("-").isdigit() else Decimal(text)
    if type_ == "B":
        return base64.b64decode(text)
    return text


def _partition_hash(text: str, type_: str) -> int:
    # A stable hash of the partition key's value routes records to shards and items to Scan segments.
    return zlib.crc32(base64.b64decode(text) if type_ == "B" else text.encode())


def _epoch_number(seconds: int) -> bytes:
    """Whole epoch seconds as DynamoDB Streams writes them: Java's Double.toString, e.g. ``1.7000001E9``."""
    if seconds < 10_000_000:
        return b"%d.0" % seconds
    digits = str(seconds)
    return f"{digits[0]}.{digits[1:].rstrip('0') or '0'}E{len(digits) - 1}".encode()


def _label(at: float) -> str:
    """A stream label: the creation time, ISO 8601 with milliseconds (``2015-05-20T20:51:10.252``)."""
    whole = int(at)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((at - whole) * 1000):03d}"


# ---------------------------------------------------------------------------------------------
# Tables and streams


@dataclass
class _Record:
    seq: int
    n: int  # the stream's record counter: write order across shards
    created: float
    body: bytes


@dataclass
class _Shard:
    shard_id: str
    parent_id: str | None
    base: int  # a record's sequence number is base + the stream's record counter
    start: int
    created: float
    end: int | None = None
    closed_at: float | None = None
    seqs: list[int] = field(default_factory=list)
    records: list[_Record] = field(default_factory=list)
    first: int = 0  # index of the oldest record not trimmed
    trimmed_through: int = 0  # the highest sequence number trimmed (0: none)
    children: list[_Shard] = field(default_factory=list)
    dropped: bool = False  # trimmed away: no longer described, no new iterators

    def describe(self, hide_end: bool) -> dict[str, Any]:
        numbers = {"StartingSequenceNumber": str(self.start)}
        if self.end is not None and not (hide_end and self.children):
            numbers["EndingSequenceNumber"] = str(self.end)
        out: dict[str, Any] = {"ShardId": self.shard_id, "SequenceNumberRange": numbers}
        if self.parent_id is not None:
            out["ParentShardId"] = self.parent_id
        return out

    @property
    def kept(self) -> int:
        return len(self.records) - self.first

    def trim(self, keep: Callable[[_Record], bool]) -> int:
        """Drop the oldest records while ``keep(record)`` is false; how many went."""
        start = self.first
        while self.first < len(self.records) and not keep(self.records[self.first]):
            self.trimmed_through = self.records[self.first].seq
            self.first += 1
        dropped = self.first - start
        if self.first > 1024 and self.first * 2 > len(self.records):
            # Trimmed records are skipped by index; compact now and then so memory follows retention.
            del self.records[: self.first], self.seqs[: self.first]
            self.first = 0
        return dropped


@dataclass
class _Stream:
    arn: str
    label: str
    table: str
    view_type: str
    key_schema: tuple[tuple[str, str], ...]
    created: float
    enabled: bool = True
    counter: int = 0  # bumped by every record: sequence numbers grow with it
    written: int = 0
    shards: list[_Shard] = field(default_factory=list)
    by_id: dict[str, _Shard] = field(default_factory=dict)
    roots: list[_Shard] = field(default_factory=list)

    def high_water(self, shard: _Shard) -> int:
        """The shard's highest sequence number so far (what LATEST starts after)."""
        return shard.end if shard.end is not None else shard.base + self.counter

    def route(self, hash_: int) -> _Shard:
        """The open shard a partition key's records go to: its root, then down its children."""
        shard = self.roots[hash_ % len(self.roots)]
        depth = 0
        while shard.children:
            depth += 1
            shard = shard.children[mix(hash_ * 64 + depth) % len(shard.children)]
        return shard


@dataclass
class _Table:
    name: str
    key_schema: tuple[tuple[str, str], ...]
    gsis: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]
    shard_count: int
    auto_split_every: int | None
    created: float
    items: dict[Key, dict[str, Any]] = field(default_factory=dict)
    sizes: dict[Key, int] = field(default_factory=dict)
    size: int = 0
    streams: list[_Stream] = field(default_factory=list)
    stream: _Stream | None = None  # the enabled stream
    _order: list[_Position] | None = None  # every key, sorted: Scan's order

    @property
    def arn(self) -> str:
        return f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{self.name}"

    def order(self) -> list[_Position]:
        if self._order is None:
            self._order = sorted(self.scan_position(key) for key in self.items)
        return self._order

    def scan_position(self, key: Key) -> _Position:
        """Where a key sits in Scan's order: by partition hash (which also picks the segment), then by key."""
        parts = tuple(_order_part(text, t) for text, (_, t) in zip(key, self.key_schema, strict=True))
        return _partition_hash(key[0], self.key_schema[0][1]), parts, key

    def key(self, doc: object, *, exact: bool, what: str = "key") -> Key:
        """The key of an item (``exact=False``) or of a Key parameter (``exact=True``), checked."""
        if not isinstance(doc, dict):
            raise serialization(f"The {what} must be a map")
        if exact and len(doc) != len(self.key_schema):
            raise validation("The provided key element does not match the schema")
        parts = []
        for attr, type_ in self.key_schema:
            value = doc.get(attr)
            if value is None:
                if exact:
                    raise validation("The provided key element does not match the schema")
                raise invalid(f"Missing the key {attr} in the item")
            if not isinstance(value, dict) or len(value) != 1:
                raise validation("The provided key element does not match the schema")
            ((tag, text),) = value.items()
            if tag != type_:
                if exact:
                    raise validation("The provided key element does not match the schema")
                raise invalid(f"Type mismatch for key {attr} expected: {type_} actual: {tag}")
            if text == "":
                raise validation(
                    "One or more parameter values are not valid. The AttributeValue for a key attribute cannot "
                    f"contain an empty string value. Key: {attr}"
                )
            parts.append(_value(value)[tag])
        return tuple(parts)

    def key_doc(self, key: Key) -> dict[str, Any]:
        return {attr: {type_: text} for text, (attr, type_) in zip(key, self.key_schema, strict=True)}

    def store(self, key: Key, item: dict[str, Any] | None) -> None:
        if (key in self.items) != (item is not None):
            self._order = None
        self.size -= self.sizes.pop(key, 0)
        self.items.pop(key, None)
        if item is not None:
            self.items[key] = item
            self.sizes[key] = len(orjson.dumps(item))
            self.size += self.sizes[key]

    def attribute_definitions(self) -> list[tuple[str, str]]:
        seen: dict[str, str] = {}
        for attr, type_ in [*self.key_schema, *(k for _, schema in self.gsis for k in schema)]:
            seen.setdefault(attr, type_)
        return list(seen.items())


@dataclass(frozen=True)
class StreamsStats(Stats):
    """What one table saw.

    ``requests`` counts the valid requests naming the table or its streams, faulty answers included;
    ``items`` the items served by Scan, GetItem and BatchGetItem, ``records`` the stream records
    served by GetRecords (retries included); ``unprocessed`` the BatchGetItem keys handed back;
    ``changes`` the writes that changed the table and ``records_written`` the stream records they made.
    """

    records: int = 0
    unprocessed: int = 0
    changes: int = 0
    records_written: int = 0


# ---------------------------------------------------------------------------------------------
# Request parsing


def _sequence(text: object) -> int:
    if not isinstance(text, str) or not text.isdigit() or not text.isascii() or not 21 <= len(text) <= 40:
        raise validation(f"Invalid SequenceNumber: {text!r}")
    return int(text)


# ---------------------------------------------------------------------------------------------
# The server


class StreamsServer(ServerBase[StreamsStats]):
    """A DynamoDB + DynamoDB Streams endpoint on 127.0.0.1 (see the module docstring).

    ``start()`` returns the endpoint URL, ``stop()`` ends it; ``with StreamsServer() as s:`` does
    both. Tables, writes, splits, trims and new streams can happen while it serves, from any thread.
    Times (record creation, iterator age, retention) come from ``now()``: the wall clock plus what
    ``advance_clock`` added, so tests can age iterators and records without sleeping.
    Faults: ``latency`` on every request; ``throttle_rate`` and ``error_rate`` on the operations in
    ``fault_operations`` (Scan and GetRecords unless set); ``crc_error_rate`` on those that are
    DynamoDB operations; ``unprocessed_rate`` on BatchGetItem keys. They are drawn from a generator
    seeded by ``seed`` (reset by ``reset_faults``). A throttled Scan answers
    ProvisionedThroughputExceededException, a throttled GetRecords LimitExceededException.
    """

    _thread_name = "streams-server"
    _poll_interval = 0.05

    def __init__(
        self,
        *,
        port: int = 0,
        seed: int = 0,
        region: str = REGION,
        iterator_ttl: float = ITERATOR_TTL,
        retention: float = RETENTION,
        describe_page_size: int = 100,
    ) -> None:
        super().__init__(port=port, seed=seed, lock=threading.RLock(), stats=StreamsStats)
        self.region = region
        self.iterator_ttl = iterator_ttl
        """Seconds a shard iterator stays valid (DynamoDB: 15 minutes)."""
        self.retention = retention
        """Seconds a stream record is kept (DynamoDB: 24 hours)."""
        self.describe_page_size = describe_page_size
        """Shards per DescribeStream page when the request gives no Limit (DynamoDB: 100)."""
        self._tables: dict[str, _Table] = {}
        self._streams: dict[str, _Stream] = {}
        self._ids = random.Random(seed)
        self._clock_offset = 0.0
        self._unprocessed_rate = 0.0
        self._fault_operations = _FAULT_OPERATIONS
        self.exports = ExportService(region)
        """Exports to S3: set ``exports.s3`` to a client of the S3 they go to."""
        self._hide_shard_ends = False

    # Clock -------------------------------------------------------------------------------------

    def now(self) -> float:
        """The server's time, epoch seconds: the wall clock plus ``advance_clock`` offsets."""
        return time.time() + self._clock_offset

    def advance_clock(self, seconds: float) -> None:
        """Move the server's time forward (iterators age, records get older and may be trimmed)."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._clock_offset += seconds

    # Tables ------------------------------------------------------------------------------------

    def create_table(
        self,
        name: str,
        key_schema: KeySchema = DEFAULT_KEYS,
        view_type: str | None = "NEW_AND_OLD_IMAGES",
        gsis: Sequence[tuple[str, KeySchema]] = (),
        *,
        shards: int = 4,
        auto_split_every: int | None = None,
    ) -> None:
        """A new empty table, with a stream of ``view_type`` (None: no stream) starting with ``shards`` shards.

        ``key_schema`` is ``[(attribute, "S" | "N" | "B")]``, partition key first; ``gsis`` are
        ``[(index name, key schema)]`` and only show in DescribeTable. With ``auto_split_every=N``
        the stream splits after every N records.
        """
        if not 3 <= len(name) <= 255 or not all(c.isascii() and (c.isalnum() or c in "_.-") for c in name):
            raise ValueError(f"invalid table name {name!r}")
        if shards < 1:
            raise ValueError("a stream has at least one shard")
        if auto_split_every is not None and auto_split_every < 1:
            raise ValueError("auto_split_every is a positive number of records")
        schema = check_key_schema(name, key_schema)
        indexes = tuple((index, check_key_schema(f"{name}/{index}", s)) for index, s in gsis)
        with self._lock:
            if name in self._tables:
                raise ValueError(f"table {name!r} already exists")
            table = _Table(name, schema, indexes, shards, auto_split_every, self.now())
            self._tables[name] = table
            self._stats[name] = StreamsStats()
            if view_type is not None:
                self._enable(table, view_type)

    def table_names(self) -> list[str]:
        with self._lock:
            return sorted(self._tables)

    def key_of(self, table: str, item: dict[str, Any]) -> Key:
        """The key ``snapshot`` files an item (or a Keys map) under: its key values' text, normalised."""
        with self._lock:
            return self._table(table).key(item, exact=False)

    def snapshot(self, table: str) -> dict[Key, dict[str, Any]]:
        """The table's current items (copies, DynamoDB JSON as GetItem returns them) by ``key_of``."""
        with self._lock:
            items = self._table(table).items
            return {key: orjson.loads(orjson.dumps(item)) for key, item in items.items()}

    def get(self, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        """One item by its key (DynamoDB JSON), or None."""
        with self._lock:
            t = self._table(table)
            item = t.items.get(t.key(key, exact=True))
            return None if item is None else orjson.loads(orjson.dumps(item))

    # Writes ------------------------------------------------------------------------------------
    # Each returns the eventName of the stream record it made, or None when it made none (nothing
    # changed, or no stream). Invalid items raise DynamoError, as the HTTP API would answer.

    def put(self, table: str, item: dict[str, Any]) -> str | None:
        """Store ``item`` (DynamoDB JSON), replacing the item with its key: INSERT or MODIFY."""
        with self._lock:
            t = self._table(table)
            key, new = self._checked_item(t, item)
            return self._apply(t, key, new)[1]

    def update(
        self,
        table: str,
        key: dict[str, Any],
        set: dict[str, Any] | None = None,
        remove: Sequence[str] | None = None,
    ) -> str | None:
        """UpdateItem's ``SET a = :v, … REMOVE b, …`` on top-level attributes; creates the item if absent."""
        with self._lock:
            t = self._table(table)
            k = t.key(key, exact=True)
            keys = {attr for attr, _ in t.key_schema}
            changes = {_name(a): _value(v) for a, v in (set or {}).items()}
            for attr in [*changes, *(remove or ())]:
                if attr in keys:
                    raise validation(
                        "One or more parameter values were invalid: Cannot update attribute "
                        f"{attr}. This attribute is part of the key"
                    )
            old = t.items.get(k)
            new = dict(old) if old is not None else t.key_doc(k)
            new.update(changes)
            for attr in remove or ():
                new.pop(attr, None)
            self._check_size(new)
            return self._apply(t, k, new)[1]

    def delete(self, table: str, key: dict[str, Any]) -> str | None:
        """Delete the item with ``key``: REMOVE, or nothing when there is no such item."""
        with self._lock:
            t = self._table(table)
            return self._apply(t, t.key(key, exact=True), None)[1]

    def _checked_item(self, table: _Table, item: object) -> tuple[Key, dict[str, Any]]:
        if not isinstance(item, dict):
            raise serialization("Item must be a map")
        key = table.key(item, exact=False)
        new = {_name(attr): _value(value) for attr, value in item.items()}
        self._check_size(new)
        return key, new

    @staticmethod
    def _check_size(item: dict[str, Any]) -> None:
        if len(orjson.dumps(item)) > ITEM_BYTES:
            raise validation("Item size has exceeded the maximum allowed size")

    def _apply(self, table: _Table, key: Key, new: dict[str, Any] | None) -> tuple[dict[str, Any] | None, str | None]:
        """Store ``new`` (None: delete) under ``key``; the old item and the record's eventName."""
        old = table.items.get(key)
        if new is None and old is None:
            return None, None
        if new is not None and old is not None and _same(old, new):
            return old, None
        table.store(key, new)
        event = "REMOVE" if new is None else "INSERT" if old is None else "MODIFY"
        self._count(table.name, changes=1)
        stream = table.stream
        if stream is None:
            return old, None
        self._emit(table, stream, key, event, old, new)
        return old, event

    def _emit(
        self,
        table: _Table,
        stream: _Stream,
        key: Key,
        event: str,
        old: dict[str, Any] | None,
        new: dict[str, Any] | None,
    ) -> None:
        shard = stream.route(_partition_hash(key[0], table.key_schema[0][1]))
        stream.counter += 1
        seq = shard.base + stream.counter
        now = self.now()
        view = stream.view_type
        keys = orjson.dumps(table.key_doc(key))
        images = []
        size = len(keys)
        if new is not None and view in ("NEW_IMAGE", "NEW_AND_OLD_IMAGES"):
            image = orjson.dumps(new)
            size += len(image)
            images.append(b'"NewImage":' + image)
        if old is not None and view in ("OLD_IMAGE", "NEW_AND_OLD_IMAGES"):
            image = orjson.dumps(old)
            size += len(image)
            images.append(b'"OldImage":' + image)
        # Built once as bytes, fields in DynamoDB's (alphabetical) order: GetRecords joins them.
        dynamodb = b",".join(
            [
                b'"ApproximateCreationDateTime":' + _epoch_number(int(now)),
                b'"Keys":' + keys,
                *images,
                b'"SequenceNumber":"%d"' % seq,
                b'"SizeBytes":%d' % size,
                b'"StreamViewType":"' + view.encode() + b'"',
            ]
        )
        body = (
            b'{"awsRegion":' + orjson.dumps(self.region) + b',"dynamodb":{' + dynamodb + b'},"eventID":"'
            b"%032x" % self._ids.getrandbits(128) + b'","eventName":"' + event.encode() + b'",'
            b'"eventSource":"aws:dynamodb","eventVersion":"1.1"}'
        )
        shard.records.append(_Record(seq, stream.counter, now, body))
        shard.seqs.append(seq)
        stream.written += 1
        self._count(table.name, records_written=1)
        every = table.auto_split_every
        if every is not None and stream.written % every == 0:
            self._split(stream, 2)

    # Streams -----------------------------------------------------------------------------------

    def stream_arn(self, table: str) -> str | None:
        """The table's latest stream (DescribeTable's LatestStreamArn), enabled or not; None if it never had one."""
        with self._lock:
            streams = self._table(table).streams
            return streams[-1].arn if streams else None

    def split(self, table: str, children: int = 2) -> list[str]:
        """Close every open shard of the table's stream and give each ``children`` new shards; their ids.

        ``children=1`` is DynamoDB's routine rollover of an old shard.
        """
        if children < 1:
            raise ValueError("a closed shard gets at least one child")
        with self._lock:
            stream = self._table(table).stream
            if stream is None:
                raise ValueError(f"table {table!r} has no enabled stream")
            return [s.shard_id for s in self._split(stream, children)]

    def set_auto_split(self, table: str, every: int | None) -> None:
        """Split the table's stream after every ``every`` records (None: never)."""
        if every is not None and every < 1:
            raise ValueError("auto_split_every is a positive number of records")
        with self._lock:
            self._table(table).auto_split_every = every

    def new_stream(self, table: str, view_type: str | None = None) -> str:
        """Disable the table's stream and enable a new one (same view type unless given); its ARN."""
        with self._lock:
            t = self._table(table)
            old = t.stream or (t.streams[-1] if t.streams else None)
            view = view_type or (old.view_type if old is not None else None)
            if view is None:
                raise ValueError(f"table {table!r} never had a stream: give view_type")
            self._disable(t)
            return self._enable(t, view).arn

    def disable_stream(self, table: str) -> None:
        """Stop recording: the stream's open shards close; it stays readable (until retention)."""
        with self._lock:
            t = self._table(table)
            if t.stream is None:
                raise validation("Table already has no stream enabled")
            self._disable(t)

    def enable_stream(self, table: str, view_type: str = "NEW_AND_OLD_IMAGES") -> str:
        """Start a new stream on a table that has none enabled; its ARN."""
        with self._lock:
            t = self._table(table)
            if t.stream is not None:
                raise DynamoError(
                    400, DYNAMO, "ResourceInUseException", f"Table already has an enabled stream: {t.stream.arn}"
                )
            return self._enable(t, view_type).arn

    def trim(
        self,
        table: str,
        *,
        before_seconds_ago: float | None = None,
        before_sequence: int | str | None = None,
        shard_id: str | None = None,
        stream_arn: str | None = None,
        drop_trimmed_shards: bool = False,
    ) -> int:
        """Trim stream records as DynamoDB's retention would; how many went.

        Drops the records written more than ``before_seconds_ago`` seconds ago (0: all so far), or
        those numbered below ``before_sequence``: since sequence numbers compare only within a
        lineage, give ``shard_id`` with it unless every shard is meant. The table's latest stream
        unless ``stream_arn`` says. With ``drop_trimmed_shards``, closed shards left empty vanish
        from DescribeStream (their children keep naming them as parent), as DynamoDB's do in time.
        """
        if (before_seconds_ago is None) == (before_sequence is None):
            raise ValueError("give one of before_seconds_ago and before_sequence")
        with self._lock:
            t = self._table(table)
            stream = self._streams.get(stream_arn) if stream_arn else (t.streams[-1] if t.streams else None)
            if stream is None or stream.table != table:
                raise ValueError(f"no such stream on table {table!r}")
            if shard_id is not None and shard_id not in stream.by_id:
                raise ValueError(f"no shard {shard_id!r} in {stream.arn}")
            shards = stream.shards if shard_id is None else [stream.by_id[shard_id]]
            limit = None if before_sequence is None else int(before_sequence)
            cutoff = self.now() - (before_seconds_ago or 0.0)

            def keep(record: _Record) -> bool:
                return record.seq >= limit if limit is not None else record.created >= cutoff

            dropped = 0
            for shard in shards:
                dropped += shard.trim(keep)
                if drop_trimmed_shards and shard.end is not None and not shard.kept:
                    shard.dropped = True
            return dropped

    def records(self, table: str, stream_arn: str | None = None) -> list[dict[str, Any]]:
        """The stream records still kept (the latest stream's unless named), parsed, in write order."""
        with self._lock:
            t = self._table(table)
            stream = self._streams[stream_arn] if stream_arn else (t.streams[-1] if t.streams else None)
            if stream is None:
                return []
            self._retain(stream)
            kept = [r for shard in stream.shards for r in shard.records[shard.first :]]
        return [orjson.loads(r.body) for r in sorted(kept, key=lambda r: r.n)]

    def _enable(self, table: _Table, view_type: str) -> _Stream:
        if view_type not in VIEW_TYPES:
            raise ValueError(f"view_type is one of {VIEW_TYPES}, not {view_type!r}")
        at = self.now()
        label = _label(at)
        # Labels are milliseconds: two streams of a table in the same one still need different ARNs.
        while table.streams and label <= table.streams[-1].label:
            at += 0.001
            label = _label(at)
        arn = f"{table.arn}/stream/{label}"
        stream = _Stream(arn, label, table.name, view_type, table.key_schema, at)
        # The counter starts somewhere arbitrary, as DynamoDB's numbers do.
        stream.counter = self._ids.randrange(1, 1000)
        for _ in range(table.shard_count):
            stream.roots.append(self._new_shard(stream, None))
        table.streams.append(stream)
        table.stream = stream
        self._streams[arn] = stream
        return stream

    def _disable(self, table: _Table) -> None:
        stream = table.stream
        if stream is None:
            return
        for shard in stream.shards:
            self._close(shard)
        stream.enabled = False
        table.stream = None

    def _new_shard(self, stream: _Stream, parent: _Shard | None) -> _Shard:
        index = len(stream.shards)
        base = 10 ** min(21 + index, _MAX_EXPONENT) - _ROLLOVER
        now = self.now()
        while True:
            shard_id = f"shardId-{int(now * 1000):020d}-{self._ids.getrandbits(32):08x}"
            if shard_id not in stream.by_id:
                break
        shard = _Shard(shard_id, None if parent is None else parent.shard_id, base, base + stream.counter + 1, now)
        stream.shards.append(shard)
        stream.by_id[shard_id] = shard
        return shard

    def _close(self, shard: _Shard) -> None:
        if shard.end is not None:
            return
        # The last record's number, or the start for a shard that got none (as in AWS's examples).
        shard.end = shard.seqs[-1] if shard.seqs else shard.start
        shard.closed_at = self.now()

    def _split(self, stream: _Stream, children: int) -> list[_Shard]:
        open_shards = [s for s in stream.shards if s.end is None]
        new: list[_Shard] = []
        for shard in open_shards:
            self._close(shard)
            shard.children = [self._new_shard(stream, shard) for _ in range(children)]
            new += shard.children
        return new

    def _retain(self, stream: _Stream) -> None:
        """Apply the retention period: trim old records, drop closed shards that are empty and old."""
        cutoff = self.now() - self.retention
        for shard in stream.shards:
            if shard.kept and shard.records[shard.first].created < cutoff:
                shard.trim(lambda r: r.created >= cutoff)
            if not shard.dropped and shard.closed_at is not None and shard.closed_at < cutoff and not shard.kept:
                shard.dropped = True

    # Faults and counters -----------------------------------------------------------------------
    # Latency, throttle, error and CRC rates, stats and the lifecycle are ServerBase's.

    @property
    def unprocessed_rate(self) -> float:
        """Fraction of BatchGetItem keys handed back in UnprocessedKeys (all of them: a throttle)."""
        return self._unprocessed_rate

    @unprocessed_rate.setter
    def unprocessed_rate(self, rate: float) -> None:
        self.set_faults(unprocessed_rate=rate)

    def set_faults(
        self,
        *,
        latency: float | None = None,
        throttle_rate: float | None = None,
        error_rate: float | None = None,
        crc_error_rate: float | None = None,
        unprocessed_rate: float | None = None,
        fault_operations: Iterable[str] | None = None,
        hide_shard_ends: bool | None = None,
        seed: int | None = None,
    ) -> None:
        """Change some faults at once; throttle, error and CRC rates add up to at most 1.

        ``hide_shard_ends`` makes DescribeStream show split parents as still open (no
        EndingSequenceNumber) while listing their children, as DynamoDB briefly may.
        """
        with self._lock:
            unprocessed = self._unprocessed_rate if unprocessed_rate is None else float(unprocessed_rate)
            self._set_faults(latency, throttle_rate, error_rate, crc_error_rate, seed, other_rates=[unprocessed])
            self._unprocessed_rate = unprocessed
            if fault_operations is not None:
                self._fault_operations = frozenset(fault_operations)
            if hide_shard_ends is not None:
                self._hide_shard_ends = hide_shard_ends

    def reset_faults(self) -> None:
        """No latency, no faults, and the fault generator back at its seed."""
        with self._lock:
            super().reset_faults()
            self._unprocessed_rate = 0.0
            self._fault_operations = _FAULT_OPERATIONS
            self._hide_shard_ends = False

    def _draw_operation_fault(self, operation: str, table: str, *, dynamo: bool) -> bool:
        """``_draw_fault`` for the operations in ``fault_operations``: throttles as each service does."""
        if operation not in self._fault_operations:
            return False

        def throttled() -> DynamoError:
            if not dynamo:
                return DynamoError(400, DYNAMO, "LimitExceededException", "Rate exceeded for shard")
            return throughput_exceeded(
                ThrottlingReasons=[
                    {"reason": "TableReadKeyRangeThroughputExceeded", "resource": self._table(table).arn}
                ]
            )

        # The Streams client checks no CRC, so its answers never draw a bad one.
        return self._draw_fault(table, throttled, crc=dynamo)

    # Requests ----------------------------------------------------------------------------------

    def _operations(self) -> dict[str, Handler]:
        return {
            DYNAMO_PREFIX + "PutItem": self._put_item,
            DYNAMO_PREFIX + "DeleteItem": self._delete_item,
            DYNAMO_PREFIX + "GetItem": self._get_item,
            DYNAMO_PREFIX + "BatchGetItem": self._batch_get_item,
            DYNAMO_PREFIX + "Scan": self._scan,
            DYNAMO_PREFIX + "DescribeTable": self._describe_table,
            DYNAMO_PREFIX + "ListTables": self._list_tables,
            DYNAMO_PREFIX + "ExportTableToPointInTime": self._export_table,
            DYNAMO_PREFIX + "DescribeExport": self._describe_export,
            DYNAMO_PREFIX + "ListExports": self._list_exports,
            DYNAMO_PREFIX + "DescribeContinuousBackups": self._describe_backups,
            _STREAMS_PREFIX + "ListStreams": self._list_streams,
            _STREAMS_PREFIX + "DescribeStream": self._describe_stream,
            _STREAMS_PREFIX + "GetShardIterator": self._get_shard_iterator,
            _STREAMS_PREFIX + "GetRecords": self._get_records,
        }

    def _handle(self, handler: Handler, req: dict[str, Any]) -> Reply:
        # One operation at a time: writes, stream records and reads see one consistent state.
        with self._lock:
            return handler(req)

    def _table(self, name: str, message: str | None = None) -> _Table:
        table = self._tables.get(name)
        if table is None:
            raise not_found(message or "Requested resource not found")
        return table

    def _requested(self, name: str, message: str | None = None) -> _Table:
        table = self._table(name, message)
        self._count(name, requests=1)
        return table

    # DynamoDB ----------------------------------------------------------------------------------

    def _put_item(self, req: dict[str, Any]) -> Reply:
        check_params(req, "PutItem", {"TableName", "Item", "ReturnValues", "ReturnConsumedCapacity"})
        table = self._requested(table_name(req))
        returns = str_param(req, "ReturnValues")
        check_enum(returns, ("NONE", "ALL_OLD"), "returnValues")
        key, new = self._checked_item(table, required(req, "Item"))
        old, _ = self._apply(table, key, new)
        return Reply(200, orjson.dumps({"Attributes": old} if returns == "ALL_OLD" and old is not None else {}))

    def _delete_item(self, req: dict[str, Any]) -> Reply:
        check_params(req, "DeleteItem", {"TableName", "Key", "ReturnValues", "ReturnConsumedCapacity"})
        table = self._requested(table_name(req))
        returns = str_param(req, "ReturnValues")
        check_enum(returns, ("NONE", "ALL_OLD"), "returnValues")
        old, _ = self._apply(table, table.key(required(req, "Key"), exact=True), None)
        return Reply(200, orjson.dumps({"Attributes": old} if returns == "ALL_OLD" and old is not None else {}))

    def _get_item(self, req: dict[str, Any]) -> Reply:
        check_params(req, "GetItem", {"TableName", "Key", "ConsistentRead", "ReturnConsumedCapacity"})
        table = self._requested(table_name(req))
        bool_param(req, "ConsistentRead")
        item = table.items.get(table.key(required(req, "Key"), exact=True))
        if item is None:
            return Reply(200, b"{}")
        self._count(table.name, items=1)
        return Reply(200, orjson.dumps({"Item": item}))

    def _batch_get_item(self, req: dict[str, Any]) -> Reply:
        wanted = self._batch_keys(req)
        for table, _, _ in wanted:
            self._count(table.name, requests=1)
        responses: dict[str, list[dict[str, Any]]] = {}
        unprocessed: dict[str, dict[str, Any]] = {}
        size = 0
        processed = 0
        for table, spec, keys in wanted:
            found = responses.setdefault(table.name, [])
            left: list[dict[str, Any]] = []
            for key, raw in keys:
                # Past 16 MB of answer, or when the fault draws it, a key goes back unprocessed.
                if size > BATCH_GET_BYTES or self._rng.random() < self._unprocessed_rate:
                    left.append(raw)
                    continue
                processed += 1
                item = table.items.get(key)
                if item is not None:
                    found.append(item)
                    size += table.sizes[key]
            self._count(table.name, items=len(found), unprocessed=len(left))
            if left:
                unprocessed[table.name] = {**spec, "Keys": left}
        if processed == 0:
            # DynamoDB throttles a batch of which it could process nothing.
            name = wanted[0][0].name
            self._count(name, throttles=1)
            raise throughput_exceeded()
        return Reply(200, orjson.dumps({"Responses": responses, "UnprocessedKeys": unprocessed}))

    def _batch_keys(self, req: dict[str, Any]) -> list[tuple[_Table, dict[str, Any], list[tuple[Key, Any]]]]:
        """BatchGetItem's tables, their KeysAndAttributes and keys (parsed and as sent), checked."""
        check_params(req, "BatchGetItem", {"RequestItems", "ReturnConsumedCapacity"})
        requested = required(req, "RequestItems")
        if not isinstance(requested, dict) or not requested:
            raise validation("1 validation error detected: Value at 'requestItems' failed to satisfy constraint")
        wanted: list[tuple[_Table, dict[str, Any], list[tuple[Key, Any]]]] = []
        total = 0
        for name, spec in requested.items():
            table = self._table(table_name({"TableName": name}))
            if not isinstance(spec, dict):
                raise serialization("KeysAndAttributes must be a map")
            check_params(spec, "BatchGetItem", {"Keys", "ConsistentRead"})
            raw_keys = required(spec, "Keys")
            if not isinstance(raw_keys, list) or not raw_keys:
                raise validation(
                    "1 validation error detected: Value at 'requestItems.keys' failed to satisfy constraint"
                )
            keys = [(table.key(k, exact=True), k) for k in raw_keys]
            if len({k for k, _ in keys}) != len(keys):
                raise validation("Provided list of item keys contains duplicates")
            total += len(keys)
            wanted.append((table, spec, keys))
        if total > BATCH_GET_KEYS:
            raise validation(
                "Too many items requested for the BatchGetItem call; the request length exceeds the limit of "
                f"{BATCH_GET_KEYS} keys"
            )
        return wanted

    def _scan(self, req: dict[str, Any]) -> Reply:
        params = scan_params(req)
        # Only the Select values served are allowed, so an unsupported one cannot pass unnoticed.
        check_scan(params, ("ALL_ATTRIBUTES", "COUNT"))
        name, limit, select = params.table, params.limit, params.select
        segment, total = params.segment or 0, params.total or 1
        table = self._requested(name)
        order = table.order()
        start = 0
        start_key = req.get("ExclusiveStartKey")
        if start_key is not None:
            try:
                key = table.key(start_key, exact=True)
            except DynamoError as e:
                raise validation(
                    "The provided starting key is invalid: The provided key element does not match the schema"
                ) from e
            position = table.scan_position(key)
            if position[0] % total != segment:
                raise validation(
                    f"The provided starting key is invalid: it belongs to another segment than {segment} of {total}"
                )
            # Ordered by key, not by existence: a deleted item's key still resumes the scan.
            start = bisect.bisect_right(order, position)
        bad_crc = self._draw_operation_fault("Scan", name, dynamo=True)
        items: list[dict[str, Any]] = []
        size = 0
        stopped = False
        last: Key | None = None
        for hash_, _, key in order[start:]:
            if hash_ % total != segment:
                continue
            item_size = table.sizes[key]
            if (items and size + item_size > PAGE_BYTES) or len(items) == limit:
                stopped = True
                break
            items.append(table.items[key])
            size += item_size
            last = key
        # Like DynamoDB: a page cut by Limit names its last key even when nothing follows.
        stopped |= len(items) == limit
        out: dict[str, Any] = {}
        consumed = consumed_capacity(name, size, params)
        if consumed is not None:
            out["ConsumedCapacity"] = consumed
        out["Count"] = len(items)
        if select != "COUNT":
            out["Items"] = items
        if stopped and last is not None:
            out["LastEvaluatedKey"] = table.key_doc(last)
        out["ScannedCount"] = len(items)
        self._count(name, items=len(items), crc_errors=int(bad_crc))
        return Reply(200, orjson.dumps(out), bad_crc)

    def _describe_table(self, req: dict[str, Any]) -> Reply:
        check_params(req, "DescribeTable", {"TableName"})
        name = table_name(req)
        table = self._requested(name, f"Requested resource not found: Table: {name} not found")
        throughput = {"NumberOfDecreasesToday": 0, "ReadCapacityUnits": 0, "WriteCapacityUnits": 0}
        out = table_description(
            name=table.name,
            arn=table.arn,
            key_schema=table.key_schema,
            attributes=table.attribute_definitions(),
            created=table.created,
            throughput=throughput,
            size=table.size,
            count=len(table.items),
        )
        out["BillingModeSummary"] = {
            "BillingMode": "PAY_PER_REQUEST",
            "LastUpdateToPayPerRequestDateTime": table.created,
        }
        if table.gsis:
            gsis = []
            for index, schema in table.gsis:
                attrs = [a for a, _ in schema]
                members = [k for k, item in table.items.items() if all(a in item for a in attrs)]
                gsis.append(
                    {
                        "IndexName": index,
                        "KeySchema": key_schema_json(schema),
                        "Projection": {"ProjectionType": "ALL"},
                        "IndexStatus": "ACTIVE",
                        "ProvisionedThroughput": throughput,
                        "IndexSizeBytes": sum(table.sizes[k] for k in members),
                        "ItemCount": len(members),
                        "IndexArn": f"{table.arn}/index/{index}",
                    }
                )
            out["GlobalSecondaryIndexes"] = gsis
        if table.stream is not None:
            out["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": table.stream.view_type}
        elif table.streams:
            out["StreamSpecification"] = {"StreamEnabled": False}
        if table.streams:
            # Still there after the stream is disabled: the last stream the table had.
            out["LatestStreamLabel"] = table.streams[-1].label
            out["LatestStreamArn"] = table.streams[-1].arn
        out["DeletionProtectionEnabled"] = False
        return Reply(200, orjson.dumps({"Table": out}))

    def _export_table(self, req: dict[str, Any]) -> Reply:
        allowed = {"TableArn", "S3Bucket", "S3Prefix", "ExportTime", "ExportFormat", "ExportType", "ClientToken"}
        check_params(req, "ExportTableToPointInTime", allowed)
        arn = str(req.get("TableArn", ""))
        table = self._requested(arn.rsplit("/", 1)[-1], f"Table not found: {arn}")
        items = [orjson.loads(orjson.dumps(item)) for item in table.items.values()]
        return Reply(200, orjson.dumps(self.exports.request(table.name, table.arn, req, items, table.key_schema[0][0])))

    def _describe_export(self, req: dict[str, Any]) -> Reply:
        check_params(req, "DescribeExport", {"ExportArn"})
        return Reply(200, orjson.dumps(self.exports.describe(str(req.get("ExportArn")))))

    def _list_exports(self, req: dict[str, Any]) -> Reply:
        check_params(req, "ListExports", {"TableArn", "MaxResults", "NextToken"})
        return Reply(200, orjson.dumps(self.exports.list(req.get("TableArn"))))

    def _describe_backups(self, req: dict[str, Any]) -> Reply:
        check_params(req, "DescribeContinuousBackups", {"TableName"})
        name = table_name(req)
        self._requested(name, f"Table not found: {name}")
        return Reply(200, orjson.dumps(self.exports.describe_backups(name)))

    def _list_tables(self, req: dict[str, Any]) -> Reply:
        check_params(req, "ListTables", {"Limit", "ExclusiveStartTableName"})
        return list_tables(req, sorted(self._tables))

    # DynamoDB Streams --------------------------------------------------------------------------

    def _stream(self, arn: object) -> _Stream:
        if not isinstance(arn, str):
            raise serialization("StreamArn must be a string")
        stream = self._streams.get(arn)
        if stream is None:
            raise not_found(f"Requested resource not found: Stream: {arn} not found")
        self._count(stream.table, requests=1)
        self._retain(stream)
        return stream

    def _list_streams(self, req: dict[str, Any]) -> Reply:
        check_params(req, "ListStreams", {"TableName", "Limit", "ExclusiveStartStreamArn"})
        limit = int_param(req, "Limit")
        check_range(limit, "limit", 1, 100)
        start = str_param(req, "ExclusiveStartStreamArn")
        name = str_param(req, "TableName")
        if name is not None:
            table = self._requested(name, f"Requested resource not found: Table: {name} not found")
            tables = [table]
        else:
            tables = [self._tables[n] for n in sorted(self._tables)]
        # Per table, newest first, as in DynamoDB's example answers.
        streams = [s for t in tables for s in reversed(t.streams)]
        if start is not None:
            arns = [s.arn for s in streams]
            if start not in arns:
                raise validation(f"Invalid ExclusiveStartStreamArn: {start}")
            streams = streams[arns.index(start) + 1 :]
        page = streams[: limit or 100]
        out: dict[str, Any] = {
            "Streams": [{"StreamArn": s.arn, "TableName": s.table, "StreamLabel": s.label} for s in page]
        }
        if len(streams) > len(page):
            out["LastEvaluatedStreamArn"] = page[-1].arn
        return Reply(200, orjson.dumps(out))

    def _describe_stream(self, req: dict[str, Any]) -> Reply:
        check_params(req, "DescribeStream", {"StreamArn", "Limit", "ExclusiveStartShardId", "ShardFilter"})
        stream = self._stream(required(req, "StreamArn"))
        limit = int_param(req, "Limit")
        check_range(limit, "limit", 1, 100)
        start = str_param(req, "ExclusiveStartShardId")
        shards = stream.shards
        shard_filter = req.get("ShardFilter")
        if shard_filter is not None:
            if not isinstance(shard_filter, dict):
                raise serialization("ShardFilter must be a map")
            check_enum(str_param(shard_filter, "Type"), ("CHILD_SHARDS",), "shardFilter.type")
            parent = stream.by_id.get(required(shard_filter, "ShardId"))
            if parent is None:
                raise not_found("Requested resource not found: Shard does not exist")
            shards = parent.children
        position = 0
        if start is not None:
            if start not in stream.by_id:
                raise not_found("Requested resource not found: Shard does not exist")
            # Ids are found among dropped shards too, so a page boundary survives trimming.
            ids = [s.shard_id for s in shards]
            position = ids.index(start) + 1 if start in ids else 0
        visible = [s for s in shards[position:] if not s.dropped]
        page = visible[: limit or self.describe_page_size]
        description: dict[str, Any] = {
            "CreationRequestDateTime": stream.created,
            "KeySchema": key_schema_json(stream.key_schema),
            "Shards": [s.describe(self._hide_shard_ends) for s in page],
            "StreamArn": stream.arn,
            "StreamLabel": stream.label,
            "StreamStatus": "ENABLED" if stream.enabled else "DISABLED",
            "StreamViewType": stream.view_type,
            "TableName": stream.table,
        }
        if len(visible) > len(page):
            description["LastEvaluatedShardId"] = page[-1].shard_id
        return Reply(200, orjson.dumps({"StreamDescription": description}))

    def _get_shard_iterator(self, req: dict[str, Any]) -> Reply:
        check_params(
            req, "GetShardIterator", {"StreamArn", "ShardId", "ShardIteratorType", "SequenceNumber", "Timestamp"}
        )
        stream = self._stream(required(req, "StreamArn"))
        shard_id = required(req, "ShardId")
        kind = required(req, "ShardIteratorType")
        check_enum(kind, _ITERATOR_TYPES, "shardIteratorType")
        shard = stream.by_id.get(shard_id)
        if shard is None or shard.dropped:
            raise not_found("Requested resource not found: Shard does not exist")
        high = stream.high_water(shard)
        if kind == "TRIM_HORIZON":
            position = max(shard.start, shard.trimmed_through + 1)
        elif kind == "LATEST":
            position = high + 1
        elif kind == "AT_TIMESTAMP":
            at = req.get("Timestamp")
            if isinstance(at, bool) or not isinstance(at, (int, float)):
                raise validation("Must specify a Timestamp for shard iterator type AT_TIMESTAMP")
            if at > self.now():
                raise validation("The timestamp provided is in the future")
            kept = shard.records[shard.first :]
            index = next((i for i, r in enumerate(kept) if r.created >= at), None)
            position = high + 1 if index is None else kept[index].seq
        else:
            if req.get("SequenceNumber") is None:
                raise validation(f"Must specify a sequence number for shard iterator type {kind}")
            seq = _sequence(req["SequenceNumber"])
            if not shard.start <= seq <= high:
                raise validation(
                    f"Invalid SequenceNumber {seq} for shard {shard.shard_id}: the shard's numbers run from "
                    f"{shard.start} to {high}"
                )
            position = seq if kind == "AT_SEQUENCE_NUMBER" else seq + 1
        if position <= shard.trimmed_through:
            raise DynamoError(
                400,
                DYNAMO,
                "TrimmedDataAccessException",
                f"The requested sequence number {position} is beyond the trim horizon of shard {shard.shard_id}",
            )
        return Reply(200, orjson.dumps({"ShardIterator": self._iterator(stream, shard, position)}))

    def _iterator(self, stream: _Stream, shard: _Shard, position: int) -> str:
        # Like DynamoDB's: the stream ARN, then opaque state. Stateless, so polling leaves nothing behind.
        state = orjson.dumps([shard.shard_id, str(position), self.now()])
        return f"{stream.arn}|1|{base64.b64encode(state).decode('ascii')}"

    def _parse_iterator(self, text: object) -> tuple[_Stream, _Shard, int, float]:
        if not isinstance(text, str):
            raise serialization("ShardIterator must be a string")
        try:
            arn, version, state = text.split("|")
            shard_id, position, issued = orjson.loads(base64.b64decode(state, validate=True))
            if version != "1" or not isinstance(shard_id, str) or not isinstance(issued, float):
                raise ValueError(version)
            number = int(position)
        except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError) as e:
            raise validation(f"Invalid ShardIterator: {text[:100]!r}") from e
        stream = self._stream(arn)
        shard = stream.by_id.get(shard_id)
        if shard is None:
            raise validation(f"Invalid ShardIterator: {text[:100]!r}")
        return stream, shard, number, issued

    def _get_records(self, req: dict[str, Any]) -> Reply:
        check_params(req, "GetRecords", {"ShardIterator", "Limit"})
        stream, shard, position, issued = self._parse_iterator(required(req, "ShardIterator"))
        limit = int_param(req, "Limit")
        check_range(limit, "limit", 1, MAX_GET_RECORDS)
        now = self.now()
        if now - issued > self.iterator_ttl:
            raise DynamoError(
                400,
                DYNAMO,
                "ExpiredIteratorException",
                f"Iterator expired. The iterator was created at time {email.utils.formatdate(issued, usegmt=True)} "
                f"while right now it is {email.utils.formatdate(now, usegmt=True)}. "
                f"The iterator is valid for {self.iterator_ttl:g} seconds.",
            )
        if position <= shard.trimmed_through:
            raise DynamoError(
                400,
                DYNAMO,
                "TrimmedDataAccessException",
                f"The iterator points to sequence number {position}, beyond the trim horizon of shard {shard.shard_id}",
            )
        self._draw_operation_fault("GetRecords", stream.table, dynamo=False)
        index = bisect.bisect_left(shard.seqs, position, lo=shard.first)
        end = min(len(shard.records), index + (limit or MAX_GET_RECORDS))
        bodies: list[bytes] = []
        size = 0
        for record in shard.records[index:end]:
            if bodies and size + len(record.body) > PAGE_BYTES:
                break
            bodies.append(record.body)
            size += len(record.body)
        index += len(bodies)
        parts = []
        if shard.end is None or index < len(shard.records):
            following = shard.records[index - 1].seq + 1 if bodies else position
            parts.append(b'"NextShardIterator":' + orjson.dumps(self._iterator(stream, shard, following)))
        # else: a closed shard read to its end. No NextShardIterator tells the reader to go to the children.
        parts.append(b'"Records":[' + b",".join(bodies) + b"]")
        self._count(stream.table, records=len(bodies))
        return Reply(200, b"{" + b",".join(parts) + b"}")
