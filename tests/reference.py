"""An independent reference of what PostgreSQL must hold for DynamoDB items, and helpers to load and check.

The reference follows docs/type-mapping.md and docs/dynamodb.md directly, in plain Python (Decimal,
base64, json); it shares no logic with the Rust core, so a bug there cannot hide in both places.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal

import orjson
import psycopg
from psycopg import sql
from psycopg.types.json import set_json_loads

from podyn_fast import _core
from podyn_fast.postgres import copy, ddl

# A DynamoDB typed value as Python sees its JSON: {"S": "x"}, {"L": [{"N": "1"}]}, ...
Typed = Mapping[str, Any]
# Test data is built as plain dicts whose inferred types vary; Any keeps the helpers easy to call.
Item = Mapping[str, Any]

# Numbers and strings that test the limits of the type mapping, shared by the end-to-end tests.
NUMBERS = [
    "0",
    "-0",
    "1",
    "-1.5E+3",
    "1e5",
    "0.000",
    "1.50",
    "-2.50e-3",
    "1E-130",
    "9.9999999999999999999999999999999999999E+125",
    "-9.9999999999999999999999999999999999999E+125",
    "12345678901234567890123456789012345678",
]
STRINGS = ["", "plain", "ünïcødé", "名前", "😀𝄞", 'q"b\\c', "line\nbreak", "\u2028"]

KEYS: list[tuple[str, str]] = [("pk", "S"), ("sk", "N")]
# PostgreSQL's NAMEDATALEN - 1: a longer identifier would be cut silently by the server.
MAX_IDENT_BYTES = 63


def tag_of(typed: Typed) -> tuple[str, Any]:
    """The one (tag, value) pair of a typed value."""
    assert len(typed) == 1, f"not a single-tag value: {typed!r}"
    ((tag, value),) = typed.items()
    return tag, value


def b64(raw: str) -> bytes:
    """Strict RFC 4648 decoding, as DynamoDB sends B values."""
    return base64.b64decode(raw.encode("ascii"), validate=True)


# How each tag's value reads back from jsonb (docs/type-mapping.md): sets as arrays, B as its base64 text.
_PLAIN: dict[str, Any] = {
    "S": lambda v: v,
    "B": lambda v: v,
    "N": Decimal,
    "BOOL": bool,
    "NULL": lambda v: None,
    "SS": list,
    "BS": list,
    "NS": lambda v: [Decimal(x) for x in v],
    "L": lambda v: [plain(x) for x in v],
    "M": lambda v: {k: plain(x) for k, x in v.items()},
}


def plain(typed: Typed) -> Any:
    """The jsonb content of a typed value, as Python structures (N as Decimal, B as its base64 text)."""
    tag, v = tag_of(typed)
    return _PLAIN[tag](v)


def same_json(expected: Any, actual: Any, path: str = "$") -> list[str]:
    """Differences between two JSON structures, type-strict (True is not Decimal(1)), numbers by value."""
    if type(expected) is not type(actual):
        return [f"{path}: expected {expected!r}, got {actual!r}"]
    if isinstance(expected, dict):
        if set(expected) != set(actual):
            return [f"{path}: keys {sorted(expected)!r} != {sorted(actual)!r}"]
        return [d for k in expected for d in same_json(expected[k], actual[k], f"{path}.{k}")]
    if isinstance(expected, list):
        if len(expected) != len(actual):
            return [f"{path}: length {len(expected)} != {len(actual)}"]
        pairs = enumerate(zip(expected, actual, strict=True))
        return [d for i, (e, a) in pairs for d in same_json(e, a, f"{path}[{i}]")]
    return [] if expected == actual else [f"{path}: expected {expected!r}, got {actual!r}"]


def numeric_problem(text: str, actual: Any) -> str | None:
    """Why ``actual`` is not what numeric_in would have made of ``text`` (value and scale), or None."""
    want = Decimal(text)
    if not isinstance(actual, Decimal):
        return f"N {text!r}: expected a Decimal, got {actual!r}"
    if actual != want:
        return f"N {text!r}: value {actual!r} != {want!r}"
    scale = min(0, int(want.as_tuple().exponent))
    if actual.as_tuple().exponent != scale:
        return f"N {text!r}: read back {actual!r}, exponent {actual.as_tuple().exponent} != {scale}"
    if actual.is_zero() and actual.is_signed():
        # numeric has no negative zero: "-0" reads back as 0.
        return f"N {text!r}: read back a negative zero {actual!r}"
    return None


def _same(expected: Any, actual: Any) -> bool:
    return type(actual) is type(expected) and actual == expected


def column_problems(typed: Typed, actual: Any) -> list[str]:
    """Differences between a column's value and what the reference says it must hold."""
    tag, v = tag_of(typed)
    if tag == "N":
        problem = numeric_problem(v, actual)
        return [problem] if problem else []
    if tag == "NS":
        if not isinstance(actual, list) or len(actual) != len(v):
            return [f"NS: expected {v!r}, got {actual!r}"]
        return [p for x, a in zip(v, actual, strict=True) if (p := numeric_problem(x, a))]
    if tag in ("L", "M"):
        return same_json(plain(typed), actual)
    # S, BOOL and SS read back as they are; B and BS as the decoded bytes, in the order sent.
    expected = {"B": lambda: b64(v), "BS": lambda: [b64(x) for x in v]}.get(tag, lambda: v)()
    if isinstance(expected, list):
        ok = isinstance(actual, list) and len(actual) == len(expected)
        ok = ok and all(_same(e, a) for e, a in zip(expected, actual, strict=True))
    else:
        ok = _same(expected, actual)
    return [] if ok else [f"{tag}: expected {expected!r}, got {actual!r}"]


def scan_body(items: Sequence[Item], *, dumps: str = "orjson") -> bytes:
    """A Scan response body holding ``items``, serialised like DynamoDB may: raw UTF-8 or \\u escapes."""
    page = {"Items": list(items), "Count": len(items), "ScannedCount": len(items)}
    if dumps == "orjson":
        return orjson.dumps(page)
    if dumps == "ascii":
        return json.dumps(page, ensure_ascii=True).encode("ascii")
    if dumps == "utf8":
        return json.dumps(page, ensure_ascii=False).encode("utf-8")
    raise ValueError(dumps)


def splice_body(parts: Sequence[bytes]) -> bytes:
    """A Scan body whose Items array is ``parts`` verbatim (for texts a JSON encoder cannot produce)."""
    n = len(parts)
    return b'{"Items":[' + b",".join(parts) + b'],"Count":%d,"ScannedCount":%d}' % (n, n)


class Loader:
    """A target table and its layout, growing as pages bring new attributes; pages are COPYed in."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        schema: str,
        table: str,
        keys: Sequence[tuple[str, str]] = KEYS,
        *,
        mode: Literal["columns", "jsonb"] = "columns",
        document: str | None = None,
    ) -> None:
        self.conn = conn
        self.schema = schema
        self.table = table
        self.layout = _core.Layout(list(keys), _core.key_columns(list(keys)), mode=mode, document=document)
        conn.execute(ddl.create_table(schema, table, self.layout))

    def _register(self, planned: list[tuple[str, str, str]]) -> _core.Layout:
        self.conn.execute(ddl.add_columns(self.schema, self.table, planned))
        self.layout = self.layout.with_columns(planned)
        return self.layout

    def load(self, body: bytes, *, item: bool = False, export: bool = False) -> _core.Encoded:
        """Encode a Scan body (or one item, or lines of an export data file) with the growing
        layout and COPY its rows."""
        encode: Callable[[_core.Layout, bytes], _core.Encoded] = _core.Layout.encode_scan_page
        if item:
            encode = _core.Layout.encode_item
        elif export:
            encode = _core.Layout.encode_export_lines
        encoded = encode(self.layout, body)
        while encoded.unknown:
            self._register(self.layout.plan_columns(list(encoded.unknown)))
            encoded = encode(self.layout, body)
        with self.conn.cursor() as cur:
            copy.copy_rows(cur, self.schema, self.table, self.layout.column_names, [encoded.rows])
        return encoded


def load_items(
    conn: psycopg.Connection[Any],
    schema: str,
    table: str,
    keys: Sequence[tuple[str, str]],
    items: Sequence[Item] | bytes,
    *,
    dumps: str = "orjson",
) -> tuple[_core.Layout, _core.Encoded]:
    """Create ``table``, load ``items`` (dicts, or the raw bytes of a Scan body) end to end."""
    loader = Loader(conn, schema, table, keys)
    body = items if isinstance(items, bytes) else scan_body(items, dumps=dumps)
    encoded = loader.load(body)
    return loader.layout, encoded


def _key_value(typed: Typed) -> Any:
    tag, v = tag_of(typed)
    return {"S": lambda: v, "N": lambda: Decimal(v), "B": lambda: b64(v)}[tag]()


def read_rows(
    conn: psycopg.Connection[Any], schema: str, table: str, layout: _core.Layout
) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Every row of the table as {column name: value}, by key (N keys compare by value)."""
    # Numbers inside jsonb as Decimal, so their digits are not rounded through float.
    set_json_loads(lambda s: json.loads(s, parse_float=Decimal, parse_int=Decimal), conn)
    names = layout.column_names
    query = sql.SQL("SELECT {} FROM {}.{}").format(
        sql.SQL(", ").join(sql.Identifier(n) for n in names), sql.Identifier(schema), sql.Identifier(table)
    )
    key_cols = [_key_column(layout, attr, ty) for attr, ty in layout.keys]
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for values in conn.execute(query).fetchall():
        row = dict(zip(names, values, strict=True))
        key = tuple(row[c] for c in key_cols)
        assert key not in rows, f"two rows with key {key!r}"
        rows[key] = row
    return rows


def _key_column(layout: _core.Layout, attr: str, ty: str) -> str:
    column = _column_of(layout, attr, _core.column_type(ty) or "")
    assert column is not None, f"no column for key {attr!r}"
    return column


def _column_of(layout: _core.Layout, attr: str, col_type: str) -> str | None:
    found = [c for a, t, c in layout.columns if a == attr and t == col_type]
    assert len(found) <= 1, f"attribute {attr!r} has {len(found)} {col_type} columns"
    return found[0] if found else None


def item_problems(item: Item, row: Mapping[str, Any], layout: _core.Layout) -> list[str]:
    """Differences between one row and the reference for ``item`` (every column checked)."""
    problems: list[str] = []
    used: set[str] = set()
    overflow: dict[str, Any] = {}
    for name, typed in item.items():
        tag, _ = tag_of(typed)
        col_type = _core.column_type(tag)
        if col_type is None:
            continue  # NULL: whatever columns the attribute has stay NULL (checked below)
        col = _column_of(layout, name, col_type)
        if col is None:
            assert layout.document is not None, f"attribute {name!r} ({tag}) has no column"
            overflow[name] = plain(typed)
            continue
        used.add(col)
        problems += [f"{name!r} -> {col!r}: {p}" for p in column_problems(typed, row[col])]
    for col, value in row.items():
        if col in used or col == layout.document:
            continue
        if value is not None:
            problems.append(f"column {col!r} should be NULL, holds {value!r}")
    if layout.document is not None:
        doc = row[layout.document]
        if layout.mode == "jsonb":
            problems += same_json({k: plain(v) for k, v in item.items()}, doc, "$document")
        elif overflow:
            problems += same_json(overflow, doc, "$overflow")
        elif doc is not None:
            problems.append(f"overflow column should be NULL, holds {doc!r}")
    return problems


def check_table(
    conn: psycopg.Connection[Any],
    schema: str,
    table: str,
    layout: _core.Layout,
    items: Iterable[Item],
) -> int:
    """Assert the table holds exactly ``items`` (per the reference) and nothing else; returns the count."""
    items = list(items)
    rows = read_rows(conn, schema, table, layout)
    assert len(rows) == len(items), f"{len(rows)} rows for {len(items)} items"
    problems: list[str] = []
    for item in items:
        key = tuple(_key_value(item[attr]) for attr, _ in layout.keys)
        row = rows.get(key)
        if row is None:
            problems.append(f"no row for key {key!r}")
            continue
        problems += [f"item {key!r}: {p}" for p in item_problems(item, row, layout)]
    assert not problems, "\n".join(problems[:30])
    check_columns(conn, schema, table, layout)
    return len(items)


def check_columns(conn: psycopg.Connection[Any], schema: str, table: str, layout: _core.Layout) -> None:
    """The table's columns in PostgreSQL are exactly the layout's names (none cut by the server)."""
    got = [
        r[0]
        for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
            " AND NOT attisdropped ORDER BY attnum",
            [sql.Identifier(schema, table).as_string(conn)],
        )
    ]
    assert got == layout.column_names
    assert all(len(n.encode()) <= MAX_IDENT_BYTES for n in got), got
