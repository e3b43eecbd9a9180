"""What the DynamoDB test servers share: the JSON 1.0 wire protocol, DynamoDB's errors, faults and counters.

``scan`` (a fast read-only Scan server) and ``streams`` (a mutable DynamoDB with Streams) answer the
same protocol the same way: error documents with the namespaces DynamoDB uses, request checks worded
as DynamoDB words them, a 52-character request id and an ``x-amz-crc32`` header on every answer,
keep-alive connections that ``stop`` can end. ``ServerBase`` holds that plumbing plus what both do
around their operations (latency, throttles, 500s, bad CRCs, per-table counters), so a fix to the
protocol lands in both servers at once. What tables are and how operations answer stays in each server.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import email.utils
import http.server
import random
import secrets
import socket
import sys
import threading
import time
import traceback
import uuid
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, ClassVar, Final, Generic, NamedTuple, TypeVar

import orjson

REGION: Final = "us-east-1"
ACCOUNT: Final = "123456789012"
MAX_TOTAL_SEGMENTS: Final = 1_000_000
DYNAMO_PREFIX: Final = "DynamoDB_20120810."
"""How ``X-Amz-Target`` names a DynamoDB operation (``DynamoDB_20120810.Scan``)."""
SCAN_PARAMS: Final = frozenset(
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
"""The Scan parameters the servers serve; any other is refused rather than ignored."""

# DynamoDB's own error documents: service errors carry the API's namespace (Streams shares
# DynamoDB's), but request validation and wire errors come from the Coral framework underneath.
# Clients only read the part after '#'.
DYNAMO: Final = "com.amazonaws.dynamodb.v20120810#"
VALIDATE: Final = "com.amazon.coral.validate#"
CORAL: Final = "com.amazon.coral.service#"
_CONTENT_TYPE = "application/x-amz-json-1.0"
_REASONS = {200: "OK", 400: "Bad Request", 500: "Internal Server Error"}
_KEY_TYPES = frozenset({"S", "N", "B"})


class DynamoError(Exception):
    """An error answer: HTTP status and a DynamoDB error document. Python APIs of the servers raise it too."""

    def __init__(self, status: int, namespace: str, code: str, message: str, **extra: Any) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.body = orjson.dumps({"__type": namespace + code, "message": message, **extra})


def validation(message: str) -> DynamoError:
    return DynamoError(400, VALIDATE, "ValidationException", message)


def invalid(message: str) -> DynamoError:
    """A bad parameter value, worded as DynamoDB words them."""
    return validation(f"One or more parameter values were invalid: {message}")


def serialization(message: str) -> DynamoError:
    return DynamoError(400, CORAL, "SerializationException", message)


def not_found(message: str = "Requested resource not found") -> DynamoError:
    return DynamoError(400, DYNAMO, "ResourceNotFoundException", message)


def throughput_exceeded(**extra: Any) -> DynamoError:
    """DynamoDB's throttle answer (``extra``: e.g. its ``ThrottlingReasons``)."""
    return DynamoError(
        400,
        DYNAMO,
        "ProvisionedThroughputExceededException",
        "The level of configured provisioned throughput for the table was exceeded. "
        "Consider increasing your provisioning level with the UpdateTable API.",
        **extra,
    )


class Reply(NamedTuple):
    status: int
    body: bytes
    bad_crc: bool = False


Handler = Callable[[dict[str, Any]], Reply]
"""An operation: the parsed JSON request in, the answer out (or a DynamoError raised)."""


# ---------------------------------------------------------------------------------------------
# Request parsing: DynamoDB's checks, with its messages


def _null_message(field: str) -> str:
    return (
        f"1 validation error detected: Value null at '{field[0].lower()}{field[1:]}' failed to satisfy "
        "constraint: Member must not be null"
    )


def table_name(req: dict[str, Any]) -> str:
    name = req.get("TableName")
    if name is None:
        raise validation(_null_message("TableName"))
    if not isinstance(name, str):
        raise serialization("TableName must be a string")
    # DynamoDB also accepts a table's ARN wherever it takes its name.
    if name.startswith("arn:") and ":table/" in name:
        return name.split(":table/", 1)[1]
    return name


def required(req: dict[str, Any], name: str) -> Any:
    value = req.get(name)
    if value is None:
        raise validation(_null_message(name))
    return value


def int_param(req: dict[str, Any], name: str) -> int | None:
    value = req.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise serialization(f"NUMBER_VALUE cannot be converted to Integer ({name})")
    return value


def str_param(req: dict[str, Any], name: str) -> str | None:
    value = req.get(name)
    if value is None or isinstance(value, str):
        return value
    raise serialization(f"Unexpected value type in payload ({name})")


def bool_param(req: dict[str, Any], name: str) -> bool:
    value = req.get(name, False)
    if not isinstance(value, bool):
        raise serialization(f"{name} must be a boolean")
    return value


def check_range(value: int | None, field: str, floor: int | None = None, ceiling: int | None = None) -> None:
    if value is None:
        return
    if floor is not None and value < floor:
        raise validation(
            f"1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: "
            f"Member must have value greater than or equal to {floor}"
        )
    if ceiling is not None and value > ceiling:
        raise validation(
            f"1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: "
            f"Member must have value less than or equal to {ceiling}"
        )


def check_enum(value: str | None, allowed: Sequence[str], field: str) -> None:
    if value is not None and value not in allowed:
        raise validation(
            f"1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: "
            f"Member must satisfy enum value set: [{', '.join(allowed)}]"
        )


def check_params(req: dict[str, Any], operation: str, allowed: Iterable[str]) -> None:
    """Refuse parameters the server does not serve: a test must not pass on a half-supported request."""
    unsupported = sorted(set(req) - set(allowed))
    if unsupported:
        raise validation(f"The podyn-fast test server does not support {', '.join(unsupported)} in {operation}")


class ScanParams(NamedTuple):
    """A Scan request's parameters, of the right types but not yet validated (``None``: absent)."""

    table: str
    limit: int | None
    segment: int | None
    total: int | None
    select: str | None
    capacity: str | None
    consistent: bool


def scan_params(req: dict[str, Any]) -> ScanParams:
    """Read a Scan request's parameters; ``check_scan`` validates their values.

    Two steps so that a server can check a parameter of its own in between, in DynamoDB's order.
    """
    check_params(req, "Scan", SCAN_PARAMS)
    return ScanParams(
        table=table_name(req),
        limit=int_param(req, "Limit"),
        segment=int_param(req, "Segment"),
        total=int_param(req, "TotalSegments"),
        select=str_param(req, "Select"),
        capacity=str_param(req, "ReturnConsumedCapacity"),
        consistent=bool_param(req, "ConsistentRead"),
    )


def check_scan(params: ScanParams, selects: Sequence[str]) -> None:
    """Validate a Scan's parameter values as DynamoDB does, in its order; ``selects``: the Select values allowed."""
    check_range(params.limit, "limit", 1)
    check_enum(params.select, selects, "select")
    check_enum(params.capacity, ("INDEXES", "TOTAL", "NONE"), "returnConsumedCapacity")
    check_segments(params.segment, params.total)


def check_segments(segment: int | None, total: int | None) -> None:
    """Scan's ``Segment`` and ``TotalSegments``, checked in DynamoDB's order."""
    check_range(segment, "segment", 0, MAX_TOTAL_SEGMENTS - 1)
    check_range(total, "totalSegments", 1, MAX_TOTAL_SEGMENTS)
    if segment is not None and total is None:
        raise validation(
            "The TotalSegments parameter is required but was not present in the request when "
            "Segment parameter is present"
        )
    if total is not None and segment is None:
        raise validation(
            "The Segment parameter is required but was not present in the request when parameter "
            "TotalSegments is present"
        )
    if total is not None and segment is not None and segment >= total:
        raise validation(
            "The Segment parameter is zero-based and must be less than parameter TotalSegments: "
            f"Segment: {segment} is not less than TotalSegments: {total}"
        )


def consumed_capacity(table: str, size: int, params: ScanParams) -> dict[str, Any] | None:
    """Scan's ConsumedCapacity for ``size`` bytes of items read, or None when the request asked for none."""
    if params.capacity not in ("TOTAL", "INDEXES"):
        return None
    # Scan charges the items' total size in 4 KB units (not each item rounded up), at least one.
    units = max(1, -(-size // 4096)) * (1.0 if params.consistent else 0.5)
    consumed: dict[str, Any] = {"TableName": table, "CapacityUnits": units}
    if params.capacity == "INDEXES":
        consumed["Table"] = {"CapacityUnits": units}
    return consumed


def list_tables(req: dict[str, Any], names: list[str]) -> Reply:
    """A ListTables answer over ``names`` (sorted)."""
    limit = int_param(req, "Limit")
    start = str_param(req, "ExclusiveStartTableName")
    check_range(limit, "limit", 1, 100)
    if start is not None:
        names = names[bisect.bisect_right(names, start) :]
    page = names[: limit or 100]
    out: dict[str, Any] = {"TableNames": page}
    if len(names) > len(page):
        out["LastEvaluatedTableName"] = page[-1]
    return Reply(200, orjson.dumps(out))


# ---------------------------------------------------------------------------------------------
# Key schemas


def check_key_schema(owner: str, schema: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """``schema`` as a tuple, or a ValueError naming ``owner`` when it is no DynamoDB key schema."""
    out = tuple((a, t) for a, t in schema)
    if len(out) not in (1, 2) or len({a for a, _ in out}) != len(out):
        raise ValueError(f"{owner}: a key schema is a partition key and an optional, different sort key")
    for attr, type_ in out:
        if type_ not in _KEY_TYPES or not attr:
            raise ValueError(f"{owner}: key attribute {attr!r} of type {type_!r}")
    return out


def table_description(
    *,
    name: str,
    arn: str,
    key_schema: Sequence[tuple[str, str]],
    attributes: Iterable[tuple[str, str]],
    created: float,
    throughput: dict[str, int],
    size: int,
    count: int,
) -> dict[str, Any]:
    """The fields every DescribeTable answer starts with, in DynamoDB's order; a server adds the rest."""
    return {
        "AttributeDefinitions": [{"AttributeName": a, "AttributeType": t} for a, t in attributes],
        "TableName": name,
        "KeySchema": key_schema_json(key_schema),
        "TableStatus": "ACTIVE",
        "CreationDateTime": created,
        "ProvisionedThroughput": throughput,
        "TableSizeBytes": size,
        "ItemCount": count,
        "TableArn": arn,
        # Stable across runs and servers: derived from the ARN, as a real table's is fixed.
        "TableId": str(uuid.uuid5(uuid.NAMESPACE_URL, arn)),
    }


def key_schema_json(schema: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    return [
        {"AttributeName": a, "KeyType": kind}
        for (a, _), kind in zip(schema, ("HASH", "RANGE")[: len(schema)], strict=True)
    ]


_M64 = (1 << 64) - 1


def mix(x: int) -> int:
    """splitmix64's finaliser: well-spread bits from a counter, several times cheaper than random.Random(i)."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


# ---------------------------------------------------------------------------------------------
# HTTP


class _HTTPServer(http.server.ThreadingHTTPServer):
    """One thread per connection; remembers open connections so stop() can end idle keep-alives."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: ServerBase[Any]) -> None:
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
            self._send(serialization("Content-Length required").body, 400)
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
    # DynamoDB's request ids are 52 characters of [A-Z0-9]. Not from the `random` module: a
    # handler thread still answering a request of an earlier test would move its global state
    # under a test that draws from it (hypothesis refuses that).
    return base64.b32encode(secrets.token_bytes(35)).decode("ascii")[:52]


# ---------------------------------------------------------------------------------------------
# The servers' common part


@dataclass(frozen=True)
class Stats:
    """The counters every server keeps per table; a server's own stats add theirs after these.

    ``throttles``, ``errors`` and ``crc_errors`` count the faults served; what ``requests`` and
    ``items`` count is said by each server's stats.
    """

    requests: int = 0
    throttles: int = 0
    errors: int = 0
    crc_errors: int = 0
    items: int = 0


StatsT = TypeVar("StatsT", bound=Stats)
_Server = TypeVar("_Server", bound="ServerBase[Any]")


class ServerBase(Generic[StatsT]):
    """An endpoint on 127.0.0.1 with faults and per-table counters; a server adds tables and operations.

    A subclass names its operations in ``_operations``, counts with ``_count`` and draws the faults
    of a request with ``_draw_fault``. Faults come from a random generator seeded by ``seed`` (reset
    by ``reset_faults``), so a sequential client meets the same faults on every run.
    """

    _thread_name: ClassVar[str] = "dynamodb-server"
    _poll_interval: ClassVar[float] = 0.1

    def __init__(self, *, port: int, seed: int, lock: threading.Lock | threading.RLock, stats: type[StatsT]) -> None:
        self._port = port
        self._seed = seed
        self._lock = lock
        # Counters are immutable snapshots, so one empty instance can stand for every table.
        self._no_stats = stats()
        self._stats: dict[str, StatsT] = {}
        self._rng = random.Random(seed)
        self._latency = 0.0
        self._throttle_rate = 0.0
        self._error_rate = 0.0
        self._crc_error_rate = 0.0
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # Faults and counters -----------------------------------------------------------------------

    @property
    def latency(self) -> float:
        """Seconds added before every request is answered."""
        return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        self.set_faults(latency=seconds)

    @property
    def throttle_rate(self) -> float:
        """Fraction of fault-prone requests throttled (the server's docstring says which, and how)."""
        return self._throttle_rate

    @throttle_rate.setter
    def throttle_rate(self, rate: float) -> None:
        self.set_faults(throttle_rate=rate)

    @property
    def error_rate(self) -> float:
        """Fraction of fault-prone requests answered 500 InternalServerError."""
        return self._error_rate

    @error_rate.setter
    def error_rate(self, rate: float) -> None:
        self.set_faults(error_rate=rate)

    @property
    def crc_error_rate(self) -> float:
        """Fraction of fault-prone DynamoDB answers sent with a wrong x-amz-crc32 header (botocore retries those)."""
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
        """Change some faults at once; throttle, error and CRC rates add up to at most 1."""
        with self._lock:
            self._set_faults(latency, throttle_rate, error_rate, crc_error_rate, seed)

    def _set_faults(
        self,
        latency: float | None,
        throttle_rate: float | None,
        error_rate: float | None,
        crc_error_rate: float | None,
        seed: int | None,
        other_rates: Sequence[float] = (),
    ) -> None:
        """``set_faults`` under the lock; ``other_rates`` are a subclass's, checked to be in [0, 1]."""
        rates = [
            self._throttle_rate if throttle_rate is None else float(throttle_rate),
            self._error_rate if error_rate is None else float(error_rate),
            self._crc_error_rate if crc_error_rate is None else float(crc_error_rate),
        ]
        if any(not 0.0 <= r <= 1.0 for r in [*rates, *other_rates]) or sum(rates) > 1.0:
            raise ValueError(f"fault rates must be in [0, 1] and add up to at most 1: {rates}")
        # Everything is checked before anything changes, so a refused call changes nothing.
        if latency is not None:
            if latency < 0:
                raise ValueError("latency must be >= 0")
            self._latency = float(latency)
        self._throttle_rate, self._error_rate, self._crc_error_rate = rates
        if seed is not None:
            self._rng.seed(seed)

    def reset_faults(self) -> None:
        """No latency, no faults, and the fault generator back at its seed."""
        with self._lock:
            self._latency = self._throttle_rate = self._error_rate = self._crc_error_rate = 0.0
            self._rng.seed(self._seed)

    def stats(self, table: str) -> StatsT:
        """A snapshot of one table's counters."""
        with self._lock:
            return self._stats[table]

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = dict.fromkeys(self._stats, self._no_stats)

    def _count(self, table: str, **deltas: int) -> None:
        with self._lock:
            old = self._stats.get(table)
            if old is not None:
                self._stats[table] = replace(old, **{k: getattr(old, k) + v for k, v in deltas.items()})

    def _draw_fault(self, table: str, throttled: Callable[[], DynamoError], *, crc: bool = True) -> bool:
        """Raise the throttle (``throttled()``) or 500 this request draws; True when its CRC header is to be wrong.

        ``crc=False`` for answers whose CRC no client checks, so they never draw one.
        """
        # Called only for requests that are valid, so the same valid request sequence meets the same
        # faults whatever else a test sent.
        with self._lock:
            draw = self._rng.random()
            throttle, error = self._throttle_rate, self._error_rate
            crc_rate = self._crc_error_rate if crc else 0.0
        if draw < throttle:
            self._count(table, throttles=1)
            raise throttled()
        if draw < throttle + error:
            self._count(table, errors=1)
            raise DynamoError(500, DYNAMO, "InternalServerError", "Internal server error")
        return draw < throttle + error + crc_rate

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
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": self._poll_interval},
            name=self._thread_name,
            daemon=True,
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

    def __enter__(self: _Server) -> _Server:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # Requests ----------------------------------------------------------------------------------

    def _operations(self) -> dict[str, Handler]:
        """The operations served, by their whole ``X-Amz-Target``; any other is an UnknownOperationException."""
        raise NotImplementedError

    def _handle(self, handler: Handler, req: dict[str, Any]) -> Reply:
        """Run one operation; a server whose operations must not interleave takes its lock here."""
        return handler(req)

    def dispatch(self, target: str, body: bytes) -> Reply:
        """Answer one request: ``X-Amz-Target`` and the JSON body in, status and body out."""
        if self._latency:
            time.sleep(self._latency)
        handler = self._operations().get(target)
        try:
            if handler is None:
                raise DynamoError(400, CORAL, "UnknownOperationException", "")
            try:
                req = orjson.loads(body)
            except orjson.JSONDecodeError as e:
                raise serialization(f"Invalid JSON: {e}") from e
            if not isinstance(req, dict):
                raise serialization("Start of structure or map found where not expected")
            return self._handle(handler, req)
        except DynamoError as e:
            return Reply(e.status, e.body)
        except Exception as e:
            # A bug in this server: answer like DynamoDB's 500 (so clients retry) and show where.
            traceback.print_exc()
            return Reply(500, DynamoError(500, DYNAMO, "InternalServerError", f"test server bug: {e!r}").body)
