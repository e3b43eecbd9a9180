"""The Python-facing API of the Rust core: layouts, naming, identifiers, errors, COPY framing, modes."""

from __future__ import annotations

import json
import pickle
import re
import zlib
from typing import Any

import orjson
import psycopg
import pytest
from psycopg import sql
from psycopg.rows import TupleRow

from podyn_fast import _core
from podyn_fast.errors import BodyError, DynamoServiceError, LayoutError, PodynError, Terminal
from podyn_fast.postgres import copy, ddl
from tests import reference

KEYS = reference.KEYS
PAGE = orjson.dumps(
    {
        "Items": [
            {"pk": {"S": "a"}, "sk": {"N": "1"}, "t": {"S": "x"}},
            {"pk": {"S": "b"}, "sk": {"N": "2"}, "t": {"BOOL": True}, "z": {"NULL": True}},
        ],
        "Count": 2,
        "ScannedCount": 5,
        "LastEvaluatedKey": {"pk": {"S": "b"}, "sk": {"N": "2"}},
        "ConsumedCapacity": {"TableName": "t", "CapacityUnits": 2.5},
    }
)


def _layout(*extra: tuple[str, str, str], **kw: Any) -> _core.Layout:
    return _core.Layout(KEYS, [*_core.key_columns(KEYS), *extra], **kw)


# --- Layout construction


KEY_COLUMNS = _core.key_columns(KEYS)


@pytest.mark.parametrize(
    ("keys", "columns", "kw", "why"),
    [
        pytest.param(KEYS, [], {}, "no text column", id="no key columns"),
        pytest.param(KEYS, [("pk", "text", "pk")], {}, '"sk" has no numeric column', id="sort key column missing"),
        pytest.param(KEYS, [("pk", "bytea", "pk"), ("sk", "numeric", "sk")], {}, "no text", id="key column type"),
        pytest.param(KEYS, KEY_COLUMNS, {"mode": "rows"}, "mode", id="bad mode"),
        pytest.param([("pk", "X")], [("pk", "text", "pk")], {}, "unknown DynamoDB type", id="unknown key type"),
        pytest.param([("pk", "BOOL")], [("pk", "boolean", "pk")], {}, "S, N or B", id="key of a non-key type"),
        pytest.param(KEYS, [*KEY_COLUMNS, ("a", "varchar", "a")], {}, "varchar", id="unknown column type"),
        pytest.param(KEYS, KEY_COLUMNS, {"mode": "jsonb"}, "jsonb", id="jsonb without document"),
        pytest.param(KEYS, [*KEY_COLUMNS, ("a", "text", "pk")], {}, "appears twice", id="duplicate column name"),
        pytest.param(
            KEYS, [*KEY_COLUMNS, ("a", "text", "a"), ("a", "text", "b")], {}, "two text", id="attribute twice"
        ),
        pytest.param(KEYS, KEY_COLUMNS, {"document": "sk"}, "appears twice", id="document is a column"),
        pytest.param([], [], {}, "partition key", id="no keys"),
        pytest.param([*KEYS, ("x", "S")], [*KEY_COLUMNS, ("x", "text", "x")], {}, "partition key", id="three keys"),
    ],
)
def test_layout_errors(keys: Any, columns: Any, kw: dict[str, Any], why: str) -> None:
    with pytest.raises(LayoutError, match=re.escape(why)):
        _core.Layout(keys, columns, **kw)


def test_layout_error_is_a_terminal_value_error() -> None:
    with pytest.raises(LayoutError) as info:
        _core.Layout(KEYS, [])
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, PodynError)
    assert isinstance(info.value, Terminal)


def test_layout_properties() -> None:
    layout = _layout(("t", "text", "t"), mode="jsonb", document="data", lower_case=True)
    assert layout.mode == "jsonb"
    assert layout.keys == KEYS
    assert layout.columns == [("pk", "text", "pk"), ("sk", "numeric", "sk"), ("t", "text", "t")]
    assert layout.document == "data"
    assert layout.lower_case is True
    assert layout.column_names == ["pk", "sk", "t", "data"]


def test_key_columns_and_column_type() -> None:
    assert _core.key_columns([("PK", "S"), ("Sk", "B")]) == [("PK", "text", "PK"), ("Sk", "bytea", "Sk")]
    assert _core.key_columns([("PK", "N")], lower_case=True) == [("PK", "numeric", "pk")]
    types = {t: _core.column_type(t) for t in ("S", "N", "B", "BOOL", "NULL", "SS", "NS", "BS", "L", "M")}
    assert types == {
        "S": "text",
        "N": "numeric",
        "B": "bytea",
        "BOOL": "boolean",
        "NULL": None,
        "SS": "text[]",
        "NS": "numeric[]",
        "BS": "bytea[]",
        "L": "jsonb",
        "M": "jsonb",
    }
    with pytest.raises(LayoutError):
        _core.column_type("X")


# --- plan_columns


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 63, 64, 65, 4096, 1 << 20])
def test_crc32_is_zlibs(size: int) -> None:
    # DynamoDB's x-amz-crc32 is zlib's CRC32; every length class of the SIMD path, odd tails included.
    data = bytes((i * 131 + size) & 0xFF for i in range(size))
    assert _core.crc32(data) == zlib.crc32(data)
    if size:
        damaged = bytes([data[0] ^ 1]) + data[1:]
        assert _core.crc32(damaged) != _core.crc32(data)


def test_plan_columns_is_deterministic() -> None:
    new = [("ip", "text"), ("ip", "boolean"), ("名前", "numeric"), ("a" * 80, "jsonb"), ("ip", "text[]")]
    first = _layout().plan_columns(new)
    # Another worker, with its own layout built from the same registry, names them the same.
    assert _layout().plan_columns(new) == first == _layout().plan_columns(list(new))
    assert [c for _, _, c in first] == ["ip", "ip_boolean", "名前", _core.fit_ident("a" * 80), "ip_text_array"]


def test_plan_columns_type_clash_suffixes() -> None:
    layout = _layout(("v", "text", "v"))
    types = ["numeric", "bytea", "boolean", "text[]", "numeric[]", "bytea[]", "jsonb"]
    planned = layout.plan_columns([("v", t) for t in types])
    assert [(a, t) for a, t, _ in planned] == [("v", t) for t in types]
    names = [c for _, _, c in planned]
    assert names[:3] == ["v_numeric", "v_bytea", "v_boolean"]
    assert len(set(names)) == len(names) and all(n.startswith("v_") for n in names)
    # A key attribute of another type is a clash too, not its key column.
    assert layout.plan_columns([("pk", "numeric")]) == [("pk", "numeric", "pk_numeric")]


def test_plan_columns_leaves_out_known_pairs() -> None:
    layout = _layout(("v", "text", "v"))
    assert layout.plan_columns([("v", "text"), ("pk", "text"), ("sk", "numeric")]) == []
    assert layout.plan_columns([("w", "text"), ("w", "text")]) == [("w", "text", "w")]
    grown = layout.with_columns(layout.plan_columns([("w", "boolean"), ("v", "boolean")]))
    assert grown.plan_columns([("w", "boolean"), ("v", "boolean")]) == []
    # with_columns makes a new layout; the old one is unchanged.
    assert len(layout.columns) == 3 and len(grown.columns) == 5


def test_plan_columns_resolves_collisions() -> None:
    # The clash name is taken by an attribute of that very name: the clash column gets _2.
    layout = _layout(("x", "text", "x"), ("x_boolean", "text", "x_boolean"))
    assert layout.plan_columns([("x", "boolean")]) == [("x", "boolean", "x_boolean_2")]
    # The document column's name is reserved too.
    overflow = _layout(document="data")
    assert overflow.plan_columns([("data", "text")]) == [("data", "text", "data_2")]


def test_plan_columns_lower_case_collisions() -> None:
    layout = _core.Layout(KEYS, _core.key_columns(KEYS, lower_case=True), lower_case=True)
    planned = layout.plan_columns([("Name", "text"), ("NAME", "text"), ("name", "text"), ("PK", "text")])
    assert planned == [
        ("Name", "text", "name"),
        ("NAME", "text", "name_2"),
        ("name", "text", "name_3"),
        ("PK", "text", "pk_2"),
    ]
    # Without -lc the same names are distinct columns.
    assert [c for _, _, c in _layout().plan_columns([("Name", "text"), ("NAME", "text")])] == ["Name", "NAME"]


def test_plan_columns_long_names_collide_after_cutting() -> None:
    # fit_ident keeps long names apart by a hash; a name equal to another's fitted form collides.
    long = "z" * 100
    fitted = _core.fit_ident(long)
    planned = _layout().plan_columns([(fitted, "text"), (long, "text")])
    names = [c for _, _, c in planned]
    assert names[0] == fitted
    assert names[1] != fitted and len(names[1].encode()) <= 63


# --- identifiers


HOSTILE = ['x"; DROP TABLE victim; --', '"', 'a""b', "semi;colon", "dot.ted", "$1", "Ünï 名前 😀", "select"]


@pytest.mark.parametrize("name", HOSTILE)
def test_quote_ident_in_real_sql(pg: psycopg.Connection[TupleRow], pg_schema: str, name: str) -> None:
    quoted = _core.quote_ident(name)
    assert quoted == '"' + name.replace('"', '""') + '"'
    pg.execute("CREATE TABLE victim (id int)")
    # The quoted text goes into SQL as is: that is its whole point.
    pg.execute(f"CREATE TABLE {quoted} ({quoted} int)")
    row = pg.execute(
        "SELECT c.relname, a.attname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid"
        " WHERE c.relnamespace = %s::regnamespace AND a.attnum = 1 AND c.relname <> 'victim'",
        [pg_schema],
    ).fetchall()
    assert row == [(name, name)]
    assert pg.execute("SELECT to_regclass('victim')").fetchone() == ("victim",)


def test_quote_ident_rejects_nul() -> None:
    with pytest.raises(LayoutError, match="U\\+0000"):
        _core.quote_ident("a\x00b")


def test_fit_ident_short_names_unchanged() -> None:
    for name in ["", "a", "a" * 63, "é" * 31 + "a", "😀" * 15 + "abc"]:
        assert len(name.encode()) <= 63
        assert _core.fit_ident(name) == name


@pytest.mark.parametrize(
    "name",
    ["a" * 64, "a" * 1000, "é" * 32, "a" + "é" * 40, "😀" * 16, "ab" + "😀" * 20, "名前" * 30, "x" * 53 + "é" * 6],
)
def test_fit_ident_long_names(name: str) -> None:
    fitted = _core.fit_ident(name)
    raw = fitted.encode()
    assert len(raw) <= 63
    # A prefix of the name cut at a character boundary, then _ and 8 hex digits.
    assert re.fullmatch(r"_[0-9a-f]{8}", fitted[-9:])
    assert name.startswith(fitted[:-9])
    # Cut no shorter than needed: one more character would not fit.
    assert len(name[: len(fitted) - 9 + 1].encode()) + 9 > 63
    assert _core.fit_ident(name) == fitted


def test_fit_ident_keeps_long_names_distinct(pg: psycopg.Connection[TupleRow]) -> None:
    names = ["a" * 63 + s for s in ("1", "2", "3", "é", "😀")] + ["a" * 100, "a" * 101, "é" * 40, "é" * 41]
    fitted = [_core.fit_ident(n) for n in names]
    assert len(set(fitted)) == len(names)
    # PostgreSQL keeps each fitted name whole (it would cut a longer one silently and collide).
    cols = sql.SQL(", ").join(sql.SQL("{} int").format(sql.Identifier(f)) for f in fitted)
    pg.execute(sql.SQL("CREATE TABLE long_names ({})").format(cols))
    query = "SELECT attname FROM pg_attribute WHERE attrelid = 'long_names'::regclass AND attnum > 0 ORDER BY attnum"
    got = [r[0] for r in pg.execute(query)]
    assert got == fitted


# --- bodies and errors


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"garbage", id="garbage"),
        pytest.param(b"<html>503</html>", id="html"),
        pytest.param(PAGE[: len(PAGE) // 2], id="truncated"),
        pytest.param(PAGE[:-1], id="truncated at the end"),
        pytest.param(PAGE + b"{}", id="trailing data"),
        pytest.param(b'{"Items":[{"pk":{"S":"\xff"},"sk":{"N":"1"}}],"Count":1}', id="non-UTF-8"),
        pytest.param(b'{"Items":[{"pk":{"S":"\xed\xa0\x80"},"sk":{"N":"1"}}],"Count":1}', id="UTF-8 surrogate"),
        pytest.param(b'{"Items":[{"pk":{"S":"a\\x"},"sk":{"N":"1"}}],"Count":1}', id="bad escape"),
        pytest.param(b"[]", id="array"),
        pytest.param(b"null", id="null"),
        pytest.param(b'{"TableNames":[]}', id="not a Scan response"),
        pytest.param(b'{"Item":{"pk":{"S":"a"}}}', id="GetItem response"),
        pytest.param(b'{"Items":{},"Count":0}', id="Items not an array"),
        pytest.param(b'{"Items":[],"Count":-1}', id="negative Count"),
        pytest.param(b'{"Items":[],"Count":0,"LastEvaluatedKey":[]}', id="LastEvaluatedKey not an object"),
    ],
)
def test_body_errors(body: bytes) -> None:
    with pytest.raises(BodyError):
        _layout().encode_scan_page(body)


@pytest.mark.parametrize("item", [b"", b"[]", b'"x"', b'{"pk":{"S":"a"}', b'{"pk":{"S":"a"}} x', b"\xff"])
def test_item_body_errors(item: bytes) -> None:
    with pytest.raises(BodyError):
        _layout().encode_item(item)


@pytest.mark.parametrize("message_key", ["message", "Message"])
def test_service_error_document(message_key: str) -> None:
    body = json.dumps(
        {
            "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
            message_key: "The level of configured provisioned throughput for the table was exceeded",
        }
    ).encode()
    with pytest.raises(DynamoServiceError) as info:
        _layout().encode_scan_page(body)
    err = info.value
    assert err.code == "ProvisionedThroughputExceededException"
    assert err.message == "The level of configured provisioned throughput for the table was exceeded"
    assert str(err) == f"DynamoDB error {err.code}: {err.message}"
    assert isinstance(err, PodynError) and isinstance(err, Terminal)


def test_exceptions_survive_pickle() -> None:
    raised: list[Exception] = []
    for action in (
        lambda: _core.Layout(KEYS, []),
        lambda: _layout().encode_scan_page(b"garbage"),
        lambda: _layout().encode_scan_page(b'{"__type":"x#ResourceNotFoundException","message":"gone"}'),
    ):
        with pytest.raises(PodynError) as info:
            action()
        raised.append(info.value)
    assert [type(e) for e in raised] == [LayoutError, BodyError, DynamoServiceError]
    for err in raised:
        back = pickle.loads(pickle.dumps(err))  # noqa: S301 - our own bytes
        assert type(back) is type(err)
        assert back.args == err.args
        assert str(back) == str(err)
    service = pickle.loads(pickle.dumps(raised[2]))  # noqa: S301
    assert (service.code, service.message) == ("ResourceNotFoundException", "gone")


def test_scan_page_bookkeeping() -> None:
    encoded = _layout(("t", "text", "t"), ("t", "boolean", "t_boolean")).encode_scan_page(PAGE)
    assert (encoded.count, encoded.scanned_count, encoded.consumed_capacity) == (2, 5, 2.5)
    assert orjson.loads(encoded.last_evaluated_key or b"null") == {"pk": {"S": "b"}, "sk": {"N": "2"}}
    assert (encoded.row_count, encoded.item_count, encoded.unknown, encoded.rejects) == (2, 2, (), ())
    assert encoded.rows  # two rows' worth of bytes
    # Count alone is a Scan response (Select=COUNT, or a page that matched nothing).
    empty = _layout().encode_scan_page(b'{"Count":0,"ScannedCount":10}')
    assert (empty.count, empty.scanned_count, empty.item_count, empty.rows) == (0, 10, 0, b"")
    assert empty.last_evaluated_key is None and empty.consumed_capacity is None


def test_unknown_holds_back_rows() -> None:
    encoded = _layout().encode_scan_page(PAGE)
    # In order of first appearance; NULL needs no column.
    assert encoded.unknown == (("t", "text"), ("t", "boolean"))
    assert (encoded.rows, encoded.row_count, encoded.rejects) == (b"", 0, ())


def test_reject_fields() -> None:
    item = b'{"sk":{"N":"7"},"pk":{"S":"k"},"s":{"S":"a\\u0000"}}'
    encoded = _layout(("s", "text", "s")).encode_item(item)
    (reject,) = encoded.rejects
    assert reject.item == item
    assert json.loads(reject.key) == {"pk": {"S": "k"}, "sk": {"N": "7"}}
    assert "U+0000" in reject.reason
    assert (encoded.row_count, encoded.item_count, encoded.count, encoded.last_evaluated_key) == (0, 1, None, None)


# --- COPY framing and round trips through PostgreSQL


def test_copy_header_and_trailer() -> None:
    # PostgreSQL's binary COPY: signature, flags (no OIDs), header extension length 0; trailer -1.
    assert _core.COPY_HEADER == b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
    minus_one = (-1).to_bytes(2, "big", signed=True)
    assert minus_one == _core.COPY_TRAILER


def test_pages_concatenate_under_one_header(pg: psycopg.Connection[TupleRow], pg_schema: str) -> None:
    layout = _layout(("t", "text", "t"), ("t", "boolean", "t_boolean"))
    pg.execute(ddl.create_table(pg_schema, "items", layout))
    first = layout.encode_scan_page(PAGE)
    second = layout.encode_item(b'{"pk":{"S":"c"},"sk":{"N":"3"},"t":{"S":"y"}}')
    with pg.cursor() as cur:
        copy.copy_rows(cur, pg_schema, "items", layout.column_names, [first.rows, b"", second.rows])
        # No rows at all is a valid COPY too.
        copy.copy_rows(cur, pg_schema, "items", layout.column_names, [])
    items = [*orjson.loads(PAGE)["Items"], {"pk": {"S": "c"}, "sk": {"N": "3"}, "t": {"S": "y"}}]
    assert reference.check_table(pg, pg_schema, "items", layout, items) == 3


ALL_TYPES: list[reference.Item] = [
    {
        "pk": {"S": "a"},
        "sk": {"N": "1"},
        "s": {"S": "text 😀"},
        "n": {"N": "-1.50E+3"},
        "b": {"B": "AP8="},
        "t": {"BOOL": False},
        "z": {"NULL": True},
        "ss": {"SS": ["x", "y"]},
        "ns": {"NS": ["1E-130", "2.50"]},
        "bs": {"BS": ["AA==", ""]},
        "l": {"L": [{"N": "1.50"}, {"B": "aGk="}, {"NULL": True}, {"SS": ["q"]}]},
        "m": {"M": {"k": {"M": {"deep": {"BOOL": True}}}, "": {"NS": ["7"]}}},
        "data": {"S": "an attribute named like the document column"},
    },
    {"pk": {"S": "b"}, "sk": {"N": "2"}, "s": {"N": "5"}, "n": {"S": "five"}},
    {"pk": {"S": "c"}, "sk": {"N": "3"}},
]


def test_jsonb_mode_roundtrip(pg: psycopg.Connection[TupleRow], pg_schema: str) -> None:
    loader = reference.Loader(pg, pg_schema, "items", mode="jsonb", document="data")
    body = reference.scan_body(ALL_TYPES)
    # jsonb mode never needs new columns: the whole item is the document.
    assert loader.layout.encode_scan_page(body).unknown == ()
    encoded = loader.load(body)
    assert (encoded.row_count, encoded.rejects) == (3, ())
    assert loader.layout.column_names == ["pk", "sk", "data"]
    reference.check_table(pg, pg_schema, "items", loader.layout, ALL_TYPES)
    # The document holds every attribute, NULL as JSON null and the keys too.
    doc = pg.execute("SELECT data FROM items WHERE pk = 'a'").fetchone()
    assert doc is not None
    assert doc[0]["z"] is None and doc[0]["pk"] == "a" and doc[0]["data"].startswith("an attribute")


def test_overflow_column_roundtrip(pg: psycopg.Connection[TupleRow], pg_schema: str) -> None:
    layout = _core.Layout(
        KEYS, [*_core.key_columns(KEYS), ("s", "text", "s"), ("n", "numeric", "n")], document="overflow"
    )
    pg.execute(ddl.create_table(pg_schema, "items", layout))
    encoded = layout.encode_scan_page(reference.scan_body(ALL_TYPES))
    # With an overflow column nothing is unknown: attributes without a column of their own go there.
    assert (encoded.unknown, encoded.row_count, encoded.rejects) == ((), 3, ())
    with pg.cursor() as cur:
        copy.copy_rows(cur, pg_schema, "items", layout.column_names, [encoded.rows])
    reference.check_table(pg, pg_schema, "items", layout, ALL_TYPES)
    rows: dict[Any, Any] = dict(pg.execute("SELECT pk, overflow FROM items").fetchall())
    # Item b's s is N and n is S: no column of their type, so both overflow; item c has nothing to put there.
    assert rows["b"] == {"s": 5, "n": "five"}
    assert rows["c"] is None


def test_lower_case_layout_roundtrip(pg: psycopg.Connection[TupleRow], pg_schema: str) -> None:
    keys = [("PK", "S"), ("Sk", "N")]
    layout = _core.Layout(keys, _core.key_columns(keys, lower_case=True), lower_case=True)
    assert layout.column_names == ["pk", "sk"]
    pg.execute(ddl.create_table(pg_schema, "items", layout))
    body = b'{"Items":[{"PK":{"S":"a"},"Sk":{"N":"1"},"Name":{"S":"x"},"NAME":{"S":"y"}}],"Count":1}'
    encoded = layout.encode_scan_page(body)
    planned = layout.plan_columns(list(encoded.unknown))
    assert [c for _, _, c in planned] == ["name", "name_2"]
    pg.execute(ddl.add_columns(pg_schema, "items", planned))
    layout = layout.with_columns(planned)
    encoded = layout.encode_scan_page(body)
    with pg.cursor() as cur:
        copy.copy_rows(cur, pg_schema, "items", layout.column_names, [encoded.rows])
    assert pg.execute("SELECT pk, sk, name, name_2 FROM items").fetchall() == [("a", 1, "x", "y")]


def test_large_item(pg: psycopg.Connection[TupleRow], pg_schema: str) -> None:
    # Near DynamoDB's 400 KB item limit, with long strings, binaries, sets and a wide document.
    item = {
        "pk": {"S": "big"},
        "sk": {"N": "1"},
        "s": {"S": "é" * 100_000},
        "q": {"S": '"\\\n' * 20_000},
        "b": {"B": "QUJD" * 20_000},
        "ss": {"SS": [f"member {i}" for i in range(2000)]},
        "m": {"M": {f"k{i}": {"N": f"{i}.5"} for i in range(2000)}},
    }
    # ASCII-only JSON: every é, quote, backslash and newline arrives as an escape to decode.
    layout, encoded = reference.load_items(pg, pg_schema, "items", KEYS, [item], dumps="ascii")
    assert (encoded.row_count, encoded.rejects) == (1, ())
    reference.check_table(pg, pg_schema, "items", layout, [item])


def test_any_field_order_whitespace_and_unknown_fields(pg: psycopg.Connection[TupleRow], pg_schema: str) -> None:
    # JSON allows both, and a newer DynamoDB may add response fields: none of it may matter.
    page = {
        "LastEvaluatedKey": {"pk": {"S": "c"}, "sk": {"N": "3"}},
        "ConsumedCapacity": {"TableName": "t", "CapacityUnits": 0.5, "Table": {"CapacityUnits": 0.5}},
        "FutureField": {"a": [1, 2.5e3, {"b": None, "c": "\u0000"}], "t": True},
        "Items": ALL_TYPES,
        "ScannedCount": 9,
        "Count": 3,
    }
    body = json.dumps(page, indent="\t", separators=(" ,\r\n", " :  ")).encode()
    layout, encoded = reference.load_items(pg, pg_schema, "items", KEYS, body)
    assert (encoded.count, encoded.scanned_count, encoded.consumed_capacity) == (3, 9, 0.5)
    assert json.loads(encoded.last_evaluated_key or b"null") == page["LastEvaluatedKey"]
    assert (encoded.row_count, encoded.rejects) == (3, ())
    reference.check_table(pg, pg_schema, "items", layout, ALL_TYPES)
