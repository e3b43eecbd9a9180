"""The named edge-case corpus (tests/data/edge_items.json): each case loads exactly or is rejected with its reason.

A case is ``{"name", "expect", one of "item" | "items" | "raw", optional "modes"}``:

- ``item``: one DynamoDB-JSON item; ``items``: several, loaded in that order into one table (type
  changes from item to item); ``raw``: the text of one item, spliced verbatim into the Items array,
  for what a JSON encoder cannot write (chosen escapes, lone surrogates, duplicate names);
- ``expect``: ``"ok"`` (loads exactly, per tests/reference.py) or ``{"reject": "<reason substring>"}``;
- ``modes``: the layout modes the case applies to, when not both ``columns`` and ``jsonb``.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import psycopg
import pytest
from psycopg.rows import TupleRow

from tests import reference
from tests.corpus import CORPUS, dump, parts

CASES = {case["name"]: case for case in CORPUS}
MODES = ("columns", "jsonb")
# Items around each case on the same page: a reject must not take its neighbours with it.
FILLERS = [
    {"pk": {"S": "filler before"}, "sk": {"N": "0"}, "s": {"S": "before"}, "n": {"N": "1.50"}},
    {"pk": {"S": "filler after"}, "sk": {"N": "0"}, "s": {"S": "after"}, "l": {"L": [{"N": "2"}]}},
]


def _key_of(item: Any) -> dict[str, Any]:
    """What Reject.key must hold: the item's key attributes that have the key schema's type."""
    if not isinstance(item, dict):
        return {}
    return {k: item[k] for k, tag in reference.KEYS if isinstance(item.get(k), dict) and tag in item[k]}


def _load_and_check(
    pg: psycopg.Connection[TupleRow],
    schema: str,
    table: str,
    cases: list[dict[str, Any]],
    *,
    dumps: str,
    mode: Literal["columns", "jsonb"],
) -> None:
    """Load ``cases`` with the fillers in one page and check every item: rows exact, rejects complete."""
    sent: list[tuple[bytes, Any, dict[str, Any] | None]] = [(dump(f, dumps), f, None) for f in FILLERS[:1]]
    for case in cases:
        sent += [(raw, item, case) for raw, item in parts(case, dumps)]
    sent += [(dump(f, dumps), f, None) for f in FILLERS[1:]]
    loader = reference.Loader(pg, schema, table, mode=mode, document="data" if mode == "jsonb" else None)
    encoded = loader.load(reference.splice_body([raw for raw, _, _ in sent]))

    expected_rejects = [(raw, item, case) for raw, item, case in sent if case and case["expect"] != "ok"]
    got = {r.item: r for r in encoded.rejects}
    assert len(got) == len(encoded.rejects), "two rejects with the same item bytes"
    problems = []
    for raw, item, case in expected_rejects:
        assert case is not None
        reject = got.pop(raw, None)
        if reject is None:
            problems.append(f"{case['name']}: not rejected")
            continue
        if case["expect"]["reject"] not in reject.reason:
            problems.append(f"{case['name']}: reason {reject.reason!r} lacks {case['expect']['reject']!r}")
        if json.loads(reject.key) != _key_of(item):
            problems.append(f"{case['name']}: key {reject.key!r}")
    problems += [f"unexpected reject {r.reason!r}: {raw!r}" for raw, r in got.items()]
    assert not problems, "\n".join(problems)

    ok_items = [item for _, item, case in sent if case is None or case["expect"] == "ok"]
    assert (encoded.item_count, encoded.row_count) == (len(sent), len(ok_items))
    reference.check_table(pg, schema, table, loader.layout, ok_items)


def test_corpus_is_well_formed() -> None:
    assert len(CASES) == len(CORPUS), "case names must be unique"
    for case in CORPUS:
        assert sum(k in case for k in ("item", "items", "raw")) == 1, case["name"]
        assert case["expect"] == "ok" or set(case["expect"]) == {"reject"}, case["name"]
        assert set(case.get("modes", MODES)) <= set(MODES), case["name"]
    rejects = [c for c in CORPUS if c["expect"] != "ok"]
    # Both outcomes are well represented: a corpus of only one kind would prove little.
    assert len(rejects) >= 40
    assert len(CORPUS) - len(rejects) >= 25


@pytest.mark.parametrize("name", list(CASES))
def test_case(pg: psycopg.Connection[TupleRow], pg_schema: str, name: str) -> None:
    _load_and_check(pg, pg_schema, "items", [CASES[name]], dumps="utf8", mode="columns")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dumps", ["utf8", "ascii"])
def test_whole_corpus_in_one_page(
    pg: psycopg.Connection[TupleRow], pg_schema: str, dumps: str, mode: Literal["columns", "jsonb"]
) -> None:
    # One table for everything: the columns of all cases coexist, and rejects are spread over the page.
    cases = [c for c in CORPUS if mode in c.get("modes", MODES)]
    _load_and_check(pg, pg_schema, "items", cases, dumps=dumps, mode=mode)


def test_long_names_get_distinct_short_columns(pg: psycopg.Connection[TupleRow], pg_schema: str) -> None:
    case = CASES["names: longer than 63 bytes"]
    layout, encoded = reference.load_items(pg, pg_schema, "items", reference.KEYS, [case["item"]])
    assert encoded.row_count == 1
    long_names = [a for a in case["item"] if len(a.encode()) > reference.MAX_IDENT_BYTES]
    columns = {a: c for a, _, c in layout.columns if a in long_names}
    assert set(columns) == set(long_names)
    assert len(set(columns.values())) == len(long_names)
    assert all(len(c.encode()) <= reference.MAX_IDENT_BYTES for c in columns.values())
    # The two names that share their first 63 bytes are told apart.
    assert columns["a" * 63 + "1"] != columns["a" * 63 + "2"]
    reference.check_table(pg, pg_schema, "items", layout, [case["item"]])


def test_type_change_gets_suffixed_columns(pg: psycopg.Connection[TupleRow], pg_schema: str) -> None:
    case = CASES["type changes from item to item"]
    layout, _ = reference.load_items(pg, pg_schema, "items", reference.KEYS, case["items"])
    ip = [(t, c) for a, t, c in layout.columns if a == "ip"]
    # The first type met keeps the name; each later one is suffixed with its type; NULL adds none.
    assert ip[0] == ("text", "ip")
    assert sorted(t for t, _ in ip) == sorted(
        ["text", "numeric", "boolean", "bytea", "text[]", "numeric[]", "bytea[]", "jsonb"]
    )
    assert all(c.startswith("ip_") for _, c in ip[1:])
    assert len({c for _, c in ip}) == len(ip)
    reference.check_table(pg, pg_schema, "items", layout, case["items"])


def test_binary_key_table(pg: psycopg.Connection[TupleRow], pg_schema: str) -> None:
    # A table keyed by a B attribute alone: the key column is bytea and NOT NULL, bytes kept exactly.
    keys = [("id", "B")]
    items: list[reference.Item] = [
        {"id": {"B": "AA=="}, "v": {"S": "zero byte"}},
        {"id": {"B": "/w=="}, "v": {"N": "1"}},
        {"id": {"B": "AAD/"}, "v": {"BS": ["AA=="]}},
        {"id": {"B": "aGk="}},
    ]
    layout, encoded = reference.load_items(pg, pg_schema, "items", keys, items)
    assert (encoded.row_count, encoded.rejects) == (4, ())
    assert layout.columns[0] == ("id", "bytea", "id")
    reference.check_table(pg, pg_schema, "items", layout, items)
    # A key of another type is a reject, not a new column.
    _, wrong = reference.load_items(pg, pg_schema, "wrong", keys, [{"id": {"S": "AA=="}}])
    assert (wrong.row_count, len(wrong.rejects)) == (0, 1)
    assert 'key attribute "id" has type S' in wrong.rejects[0].reason
