"""Property test: random DynamoDB items survive encode + binary COPY exactly, per the Python reference."""

from __future__ import annotations

import base64
from collections import Counter
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from psycopg.rows import TupleRow

from tests import reference

# Enough examples of 45+ items each for 10,000 items, in well under two minutes on two cores.
MAX_EXAMPLES = 240
MIN_ITEMS, MAX_ITEMS = 45, 60
REQUIRED_ITEMS = 10_000
DYNAMO_MAX_DEPTH = 32

# U+0000 is left out: such items are rejects, covered by the edge corpus. Surrogates cannot be UTF-8.
chars = st.characters(codec="utf-8", exclude_characters="\x00")
strings = st.one_of(
    st.text(chars, max_size=10),
    st.sampled_from(["", "😀", "𝄞x𠜎", "\U0010ffff", 'q"b\\c/', "line\nbreak\t\r", "\x01\x1f\x7f", "\u2028\ufeff"]),
)

NUMBER_EDGES = [
    "1E-130",
    "-1E-130",
    "9.9999999999999999999999999999999999999E+125",
    "-9.9999999999999999999999999999999999999E+125",
    "12345678901234567890123456789012345678",
    "-0.12345678901234567890123456789012345678",
    "1e5",
    "1.5E+3",
    "-2.50e-3",
    "0.000",
    "-0",
    "0",
    "1",
    "-1",
    "10",
    "0.1",
    "100.00",
    "+1",
    ".5",
    "-.5",
    "5.",
    "00042",
]


@st.composite
def random_numbers(draw: st.DrawFn) -> str:
    """Up to 38 significant digits anywhere in DynamoDB's range, written plain or with an exponent."""
    digits = str(draw(st.integers(1, 10**38 - 1)))
    # The exponent of the most significant digit: 1E-130 … 9.99…E+125.
    adjusted = draw(st.integers(-130, 125))
    form = draw(st.sampled_from(["plain", "e", "E", "E+"]))
    if form == "plain":
        text = format(Decimal(f"{digits}E{adjusted - len(digits) + 1}"), "f")
    else:
        point = draw(st.integers(1, len(digits)))
        mantissa = digits[:point] + ("." + digits[point:] if point < len(digits) else "")
        exp = adjusted - point + 1
        text = f"{mantissa}{form[0]}{'+' if form == 'E+' and exp >= 0 else ''}{exp}"
    # Spellings DynamoDB accepts on input but never sends back (streams and exports may carry them):
    # a leading zero dropped (.5), a bare trailing point (5.), padding zeros (007).
    variant = draw(st.sampled_from(["", "", "", "drop zero", "trailing point", "pad"]))
    if variant == "drop zero" and text.startswith("0."):
        text = text[1:]
    elif variant == "trailing point" and text.isdigit():
        text += "."
    elif variant == "pad":
        text = "00" + text
    return draw(st.sampled_from(["", "", "-", "+"])) + text


numbers = st.one_of(
    st.sampled_from(NUMBER_EDGES),
    st.integers(-(10**12), 10**12).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=4, min_value=-(10**6), max_value=10**6).map(str),
    random_numbers(),
)
b64 = st.binary(max_size=12).map(lambda b: base64.b64encode(b).decode("ascii"))

scalars = st.one_of(
    strings.map(lambda s: {"S": s}),
    numbers.map(lambda n: {"N": n}),
    b64.map(lambda b: {"B": b}),
    st.booleans().map(lambda b: {"BOOL": b}),
    st.just({"NULL": True}),
)
sets = st.one_of(
    st.lists(strings, min_size=1, max_size=4, unique=True).map(lambda v: {"SS": v}),
    # Set members are unique as numbers: "1" and "1.0" are the same member.
    st.lists(numbers, min_size=1, max_size=4, unique_by=Decimal).map(lambda v: {"NS": v}),
    st.lists(st.binary(max_size=8), min_size=1, max_size=4, unique=True).map(
        lambda v: {"BS": [base64.b64encode(b).decode("ascii") for b in v]}
    ),
)
map_keys = st.one_of(st.text(chars, max_size=8), st.sampled_from(["a.b", "$1", 'q"', "😀", "M", "S"]))
documents = st.recursive(
    st.one_of(scalars, sets),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda v: {"L": v}),
        st.dictionaries(map_keys, inner, max_size=4).map(lambda v: {"M": v}),
    ),
    max_leaves=8,
)
values = st.one_of(scalars, sets, documents)


@st.composite
def deep_chains(draw: st.DrawFn) -> dict[str, Any]:
    """L and M containers nested exactly DynamoDB's maximum of 32 deep, around one scalar."""
    value: dict[str, Any] = draw(scalars)
    for kind in draw(st.lists(st.sampled_from("LM"), min_size=DYNAMO_MAX_DEPTH, max_size=DYNAMO_MAX_DEPTH)):
        value = {"L": [value]} if kind == "L" else {"M": {draw(map_keys): value}}
    return value


HOSTILE_NAMES = [
    "select",
    "from",
    "user",
    "order",
    'a"b',
    '"',
    "'; DROP TABLE t; --",
    "semi;colon",
    "with space",
    "dot.ted",
    "dash-ed",
    "$1",
    "Ünïcødé",
    "名前",
    "имя",
    "اسم",
    "😀",
    "x",
    "X",
    "x_boolean",
    "x_numeric",
    "x_text[]",
    "a" * 70,
    "a" * 63 + "b",
    "é" * 40,
    "𝄞" * 20,
]
attr_names = st.one_of(
    st.sampled_from(HOSTILE_NAMES), st.text(chars, min_size=1, max_size=12).filter(lambda s: s not in {"pk", "sk"})
)


@st.composite
def item_pages(draw: st.DrawFn) -> tuple[list[dict[str, Any]], str]:
    """A page of items sharing a small pool of names, so one name meets several types (a clash)."""
    pool = draw(st.lists(attr_names, min_size=3, max_size=10, unique=True))
    n = draw(st.integers(MIN_ITEMS, MAX_ITEMS))
    items: list[dict[str, Any]] = []
    for i in range(n):
        pk = draw(strings.filter(bool))
        # Keys unique by the index; their spelling varies (numbers are compared by value).
        sk = draw(st.sampled_from([str(i), f"{i}.0", f"{i}e0", f"{i * 10}E-1", f"+{i}"]))
        attrs = draw(st.dictionaries(st.sampled_from(pool), values, max_size=5))
        items.append({"pk": {"S": pk}, "sk": {"N": sk}, **attrs})
    for _ in range(draw(st.integers(0, 2))):
        target = draw(st.integers(0, n - 1))
        items[target][draw(st.sampled_from(pool))] = draw(deep_chains())
    dumps = draw(st.sampled_from(["orjson", "ascii", "utf8"]))
    return items, dumps


def _depth(typed: dict[str, Any]) -> int:
    ((tag, v),) = typed.items()
    if tag == "L":
        return 1 + max((_depth(x) for x in v), default=0)
    if tag == "M":
        return 1 + max((_depth(x) for x in v.values()), default=0)
    return 0


def test_random_items_roundtrip(pg: psycopg.Connection[TupleRow], pg_schema: str) -> None:
    loaded = 0
    tables = 0
    tags: Counter[str] = Counter()
    clashes = 0
    deepest = 0

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )
    @given(item_pages())
    def roundtrip(page: tuple[list[dict[str, Any]], str]) -> None:
        nonlocal loaded, tables, clashes, deepest
        items, dumps = page
        tables += 1
        table = f"t{tables}"
        layout, encoded = reference.load_items(pg, pg_schema, table, reference.KEYS, items, dumps=dumps)
        assert [(r.reason, r.item) for r in encoded.rejects] == []
        assert (encoded.row_count, encoded.item_count) == (len(items), len(items))
        assert (encoded.count, encoded.scanned_count, encoded.last_evaluated_key) == (len(items), len(items), None)
        loaded += reference.check_table(pg, pg_schema, table, layout, items)
        pg.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
        # What the run covered, to prove below that the strategies reach what they claim.
        for item in items:
            for v in item.values():
                tags.update(v.keys())
                deepest = max(deepest, _depth(v))
        attrs_with_types = Counter(a for a, _, _ in layout.columns)
        clashes += sum(1 for n in attrs_with_types.values() if n > 1)

    roundtrip()
    assert loaded >= REQUIRED_ITEMS, f"only {loaded} items loaded and checked"
    assert set(tags) == {"S", "N", "B", "BOOL", "NULL", "SS", "NS", "BS", "L", "M"}, tags
    assert deepest == DYNAMO_MAX_DEPTH
    assert clashes > 0
    print(f"{loaded} items in {tables} tables, {clashes} type clashes, tags {dict(tags)}")


@pytest.mark.parametrize(
    ("tamper", "item"),
    [
        ("UPDATE t SET n = 1.5", {"n": {"N": "1.50"}}),
        ("UPDATE t SET n = 100.0", {"n": {"N": "1E+2"}}),
        ("UPDATE t SET s = 'X'", {"s": {"S": "x"}}),
        ("UPDATE t SET b = '\\x00'", {"b": {"B": "AAA="}}),
        ("UPDATE t SET ns = '{1.0,2}'", {"ns": {"NS": ["1", "2"]}}),
        ("UPDATE t SET ss = '{b,a}'", {"ss": {"SS": ["a", "b"]}}),
        ("""UPDATE t SET m = '{"k": 1}'""", {"m": {"M": {"k": {"BOOL": True}}}}),
        ("""UPDATE t SET m = '{"k": 2}'""", {"m": {"M": {"k": {"N": "1"}}}}),
        ("UPDATE t SET extra = 'x'", {"extra": {"NULL": True}, "other": {"BOOL": True}}),
    ],
)
def test_reference_catches_differences(
    pg: psycopg.Connection[TupleRow], pg_schema: str, tamper: str, item: dict[str, Any]
) -> None:
    # The checker must fail on a row that differs in value, scale, order, type or stray content;
    # a checker that passes everything would make the property test above worthless.
    full = {"pk": {"S": "a"}, "sk": {"N": "1"}, **item}
    layout, _ = reference.load_items(pg, pg_schema, "t", reference.KEYS, [full])
    reference.check_table(pg, pg_schema, "t", layout, [full])
    if "extra" in tamper:
        pg.execute("ALTER TABLE t ADD COLUMN extra text")
        layout = layout.with_columns([("unrelated", "text", "extra")])
    pg.execute(tamper)
    with pytest.raises(AssertionError):
        reference.check_table(pg, pg_schema, "t", layout, [full])
