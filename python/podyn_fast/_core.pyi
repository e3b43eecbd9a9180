"""The Rust core: DynamoDB JSON bodies to PostgreSQL binary COPY rows.

Every call that reads a body releases the GIL for the whole body and creates no Python object per
item: rows come back as one ``bytes`` of binary COPY rows without header or trailer, so encoded
pages can be concatenated under one ``COPY_HEADER`` … ``COPY_TRAILER``.

Column types are spelled as in SQL: ``text``, ``numeric``, ``bytea``, ``boolean``, ``text[]``,
``numeric[]``, ``bytea[]``, ``jsonb``. DynamoDB types as on the wire: ``S``, ``N``, ``B``, ``BOOL``,
``NULL``, ``SS``, ``NS``, ``BS``, ``L``, ``M``.
"""

from collections.abc import Sequence
from typing import Final, Literal, final

__all__ = [
    "COPY_HEADER",
    "COPY_TRAILER",
    "Encoded",
    "ExportLines",
    "Layout",
    "Reject",
    "StreamBatch",
    "StreamPosition",
    "__version__",
    "column_type",
    "crc32",
    "fit_ident",
    "key_columns",
    "quote_ident",
    "stream_position",
]

__version__: Final[str]
COPY_HEADER: Final[bytes]
"""The binary COPY signature, flags and header extension: write it once before the rows."""
COPY_TRAILER: Final[bytes]
"""The binary COPY trailer (field count -1): write it once after the rows."""

@final
class Reject:
    """An item that cannot be represented, for the reject table."""

    @property
    def key(self) -> bytes:
        """The item's key attributes as DynamoDB JSON, as far as they could be read."""
    @property
    def item(self) -> bytes:
        """The item exactly as received (DynamoDB JSON)."""
    @property
    def reason(self) -> str:
        """Why it was rejected."""

@final
class Encoded:
    """The result of encoding a Scan page or an item."""

    @property
    def rows(self) -> bytes:
        """Binary COPY rows. Complete only when ``unknown`` is empty."""
    @property
    def row_count(self) -> int: ...
    @property
    def item_count(self) -> int:
        """Items read: rows plus rejects (when ``unknown`` is empty)."""
    @property
    def unknown(self) -> tuple[tuple[str, str], ...]:
        """(attribute, column type) pairs the layout lacks, in order of first appearance.

        When any is present, ``rows`` and ``rejects`` are empty: register the columns
        (``Layout.plan_columns``), add them, and encode the same body again.
        """
    @property
    def rejects(self) -> tuple[Reject, ...]: ...
    @property
    def count(self) -> int | None:
        """The Scan response's ``Count`` (None for single items)."""
    @property
    def scanned_count(self) -> int | None: ...
    @property
    def last_evaluated_key(self) -> bytes | None:
        """The raw JSON of ``LastEvaluatedKey``; None on the last page."""
    @property
    def consumed_capacity(self) -> float | None:
        """``ConsumedCapacity.CapacityUnits``, when the request asked for it."""

@final
class StreamBatch:
    """GetRecords responses of one transaction, collapsed per key: only the last change of each
    key counts."""

    @property
    def upserts(self) -> Encoded:
        """Rows of the last new image of each upserted key, with unknown attributes and rejects
        (records whose key cannot be stored are rejects too). Complete only when
        ``upserts.unknown`` is empty: then register the columns and encode the bodies again."""
    @property
    def deletes(self) -> bytes:
        """Binary COPY rows of the key columns (in key order) of keys whose last change is REMOVE."""
    @property
    def delete_count(self) -> int: ...
    @property
    def fetch(self) -> tuple[bytes, ...]:
        """``Keys`` (DynamoDB JSON) of keys whose last change carries no new image (KEYS_ONLY or
        OLD_IMAGE streams): read the items (BatchGetItem); absent ones are deletes."""
    @property
    def records(self) -> int:
        """Records in the responses."""

@final
class StreamPosition:
    """Where one GetRecords response leaves its shard."""

    @property
    def records(self) -> int:
        """Records in the response."""
    @property
    def last_sequence_number(self) -> str | None: ...
    @property
    def last_created(self) -> float | None:
        """ApproximateCreationDateTime of the last record, in epoch seconds."""
    @property
    def next_shard_iterator(self) -> str | None:
        """None when the shard is closed and has been read to its end."""

@final
class Layout:
    """Which attribute (and type) goes to which column, in COPY column order.

    Args:
        keys: the key schema, partition key first: ``[(attribute, "S" | "N" | "B"), ...]``.
        columns: the column registry in column order: ``[(attribute, column type, column name)]``;
            it must hold a column for each key attribute with the key's type.
        mode: ``"columns"`` (a column per attribute and type) or ``"jsonb"`` (the registered
            columns plus ``document`` holding the whole item).
        document: the ``jsonb`` column after the registered ones. Required in jsonb mode (the whole
            item); in columns mode, an overflow column for attributes without a column of their own
            (then no attribute is reported unknown).
        lower_case: lower-case the names of new columns (``-lc``).

    Raises:
        LayoutError: the layout is inconsistent.
    """

    def __new__(
        cls,
        keys: Sequence[tuple[str, str]],
        columns: Sequence[tuple[str, str, str]],
        *,
        mode: Literal["columns", "jsonb"] = "columns",
        document: str | None = None,
        lower_case: bool = False,
    ) -> Layout: ...
    @property
    def mode(self) -> Literal["columns", "jsonb"]: ...
    @property
    def keys(self) -> list[tuple[str, str]]: ...
    @property
    def columns(self) -> list[tuple[str, str, str]]: ...
    @property
    def document(self) -> str | None: ...
    @property
    def lower_case(self) -> bool: ...
    @property
    def column_names(self) -> list[str]:
        """Column names in COPY order (the document column last)."""
    def plan_columns(self, new: Sequence[tuple[str, str]]) -> list[tuple[str, str, str]]:
        """Name new (attribute, column type) pairs deterministically: the attribute's name for its
        first column, ``name_<type>`` for a type clash, fitted to 63 bytes, ``_2``… on collision.
        Pairs the layout already has are left out."""
    def with_columns(self, added: Sequence[tuple[str, str, str]], *, document: str | None = None) -> Layout:
        """A new layout with ``added`` columns after the existing ones (and optionally a document column)."""
    def encode_scan_page(self, body: bytes) -> Encoded:
        """Encode the raw HTTP body of a DynamoDB Scan response.

        Raises:
            BodyError: the body is not a readable Scan response.
            DynamoServiceError: the body is a DynamoDB error document.
        """
    def encode_records(self, bodies: Sequence[bytes]) -> StreamBatch:
        """Encode raw bodies of DynamoDB Streams GetRecords responses into one batch, in the order
        given: the bodies of one shard in their order; bodies of shards read side by side (their
        keys are disjoint) in any order.

        Raises:
            BodyError: a body is not a readable GetRecords response.
            DynamoServiceError: a body is an error document.
        """
    def copy_text(self, rows: bytes) -> bytes:
        """Binary COPY rows of this layout (as ``Encoded.rows``) in PostgreSQL's text COPY format,
        one line per row: what a psql script's ``COPY … FROM STDIN`` block holds.

        Raises:
            BodyError: the rows are not binary COPY rows of this layout.
        """
    def encode_export_lines(self, body: bytes) -> Encoded:
        """Encode whole lines of a DynamoDB export data file (DYNAMODB_JSON, decompressed): one
        ``{"Item": {...}}`` a line.

        Raises:
            BodyError: a line is not an export line (the file is damaged).
        """

    def encode_item(self, item: bytes) -> Encoded:
        """Encode one item given as a raw DynamoDB attribute map (``{"pk": {"S": "a"}, ...}``).

        Raises:
            BodyError: the text is not a JSON object.
        """

@final
class ExportLines:
    """An export data file's lines (gzip JSON Lines; several gzip members allowed), inflated a
    chunk at a time without the GIL, so memory stays bounded however well the file compresses."""

    def __new__(cls, fd: int, *, skip: int = 0, chunk: int = ...) -> ExportLines:
        """Read the gzip file open at ``fd`` (duplicated: the caller keeps its own) from its
        current offset; the first ``skip`` lines are left out."""
    def next_chunk(self) -> bytes | None:
        """The next chunk of whole lines, about ``chunk`` bytes (a longer line whole); None once
        every line is out. ``BodyError`` when the file is not whole gzip (cut short, damaged)."""

def quote_ident(name: str) -> str:
    """Quote an identifier for SQL: always quoted, embedded quotes doubled.

    Raises:
        LayoutError: the name contains U+0000.
    """

def fit_ident(name: str) -> str:
    """Fit a name in PostgreSQL's 63 bytes: cut at a character boundary plus ``_`` and 8 hex
    digits of a hash of the whole name, so distinct names stay distinct."""

def column_type(dynamo_type: str) -> str | None:
    """The column type for a DynamoDB type; None for NULL, which creates no column."""

def key_columns(keys: Sequence[tuple[str, str]], *, lower_case: bool = False) -> list[tuple[str, str, str]]:
    """The registry entries of a key schema: ``[(attribute, column type, column name)]``."""

def stream_position(body: bytes) -> StreamPosition:
    """Read a GetRecords response for where it leaves its shard, without encoding its images.

    Raises:
        BodyError: the body is not a readable GetRecords response.
        DynamoServiceError: the body is an error document.
    """

def crc32(data: bytes) -> int:
    """CRC32 of ``data`` as zlib computes it (DynamoDB's ``x-amz-crc32``), with the GIL released."""
