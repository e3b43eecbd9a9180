"""Bad input through the real command: the named corpus (tests/data/edge_items.json) served by the fast
Scan server and loaded by `podyn-fast migrate`, a 400 KB item, 2,000 distinct attributes, binary
keys. Every item lands exactly or is in the rejects table with its reason; the run never crashes
and its summary counts are right."""

from __future__ import annotations

import base64
import json
import random
import re
import string
import subprocess
from typing import Any

import orjson
import psycopg
from psycopg import sql

from podyn_fast import state
from tests import reference
from tests.corpus import CORPUS, parts
from tests.fix_scan_server import migrate_cmd
from tests.servers.scan import ScanServer, TableSpec, _key_part

KEYS = (("pk", "S"), ("sk", "N"))


def _migrate(dsn: str, server: ScanServer, schemas: tuple[str, str], table: str, *args: str) -> Any:
    cmd = migrate_cmd(dsn, server.endpoint, schemas, "--table", table, "--segments", "4", *args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)


def _servable(raw: bytes) -> bool:
    """Whether DynamoDB could hold it: JSON (no lone surrogate) with a key of the table's types."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return isinstance(doc, dict) and None not in (_key_part(doc.get(k), t) for k, t in KEYS)


def _serve(server: ScanServer, name: str, items: list[bytes], keys: tuple[tuple[str, str], ...] = KEYS) -> None:
    server.add_table(TableSpec(name, keys, items.__getitem__, len(items)))


def _rejects(dsn: str, state_schema: str, table: str) -> list[tuple[str, str]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [
            (str(k), str(r))
            for k, r in conn.execute(
                sql.SQL("SELECT key, reason FROM {}.rejects WHERE table_name = %s").format(
                    sql.Identifier(state_schema)
                ),
                [table],
            )
        ]


def _check_rows(dsn: str, schemas: tuple[str, str], table: str, items: list[Any]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        found = state.get_table(conn, schemas[1], table)
        assert found is not None
        layout = state.layout(conn, schemas[1], found)
        assert reference.check_table(conn, schemas[0], found.target_table, layout, items) == len(items)


def test_the_corpus_through_migrate(pg_dsn: str, fast_dynamo: ScanServer, schemas: tuple[str, str]) -> None:
    served: list[tuple[bytes, Any, dict[str, Any]]] = []
    for case in CORPUS:
        if "columns" in case.get("modes", ("columns",)):
            served += [(raw, item, case) for raw, item in parts(case, "utf8") if _servable(raw)]
    ok = [item for _, item, case in served if case["expect"] == "ok"]
    bad = {json.dumps({"pk": item["pk"], "sk": item["sk"]}, sort_keys=True): case for _, item, case in served
           if case["expect"] != "ok"}  # fmt: skip
    assert len(ok) >= 25 and len(bad) >= 40, (len(ok), len(bad))
    _serve(fast_dynamo, "corpus", [raw for raw, _, _ in served])

    done = _migrate(pg_dsn, fast_dynamo, schemas, "corpus")
    # Rejects make the exit code 1, with the count; nothing crashed.
    assert done.returncode == 1, done.stderr
    message = " ".join(done.stderr.split())
    assert "Traceback" not in message
    assert f"{len(bad):,} item(s) could not be represented" in message, message
    assert re.search(rf"│ corpus │\s+{len(ok):,} │\s+{len(bad):,} │", done.stderr), done.stderr

    _check_rows(pg_dsn, schemas, "corpus", ok)
    rejects = _rejects(pg_dsn, schemas[1], "corpus")
    assert len(rejects) == len(bad)
    problems = []
    for key, reason in rejects:
        expected = bad.get(json.dumps(json.loads(key), sort_keys=True))
        if expected is None:
            problems.append(f"unexpected reject {key}: {reason}")
        elif expected["expect"]["reject"] not in reason:
            problems.append(f"{expected['name']}: {reason!r} lacks {expected['expect']['reject']!r}")
    assert not problems, "\n".join(problems)
    # A rerun changes nothing: the rejects are not recorded twice.
    again = _migrate(pg_dsn, fast_dynamo, schemas, "corpus")
    assert again.returncode == 1
    assert len(_rejects(pg_dsn, schemas[1], "corpus")) == len(bad)


def test_a_400_kb_item_and_2000_attributes(pg_dsn: str, fast_dynamo: ScanServer, schemas: tuple[str, str]) -> None:
    items: list[dict[str, Any]] = [
        # DynamoDB's largest item, as a string, as a list and as a map.
        {"pk": {"S": "big-s"}, "sk": {"N": "1"}, "s": {"S": "é" * 200_000}},
        {"pk": {"S": "big-l"}, "sk": {"N": "1"}, "l": {"L": [{"N": str(i)} for i in range(40_000)]}},
        {"pk": {"S": "big-m"}, "sk": {"N": "1"}, "m": {"M": {f"k{i}": {"S": "v" * 30} for i in range(9_000)}}},
    ]
    # 2,000 distinct attribute names over 4,000 items: past the 1,500-column limit, the overflow column.
    items += [
        {"pk": {"S": f"wide{i}"}, "sk": {"N": "2"}} | {f"attr_{(i + j * 401) % 2000}": {"N": str(j)} for j in range(5)}
        for i in range(4000)
    ]
    _serve(fast_dynamo, "bigwide", [orjson.dumps(item) for item in items])
    assert max(len(orjson.dumps(i)) for i in items) >= 390_000
    done = _migrate(pg_dsn, fast_dynamo, schemas, "bigwide")
    assert done.returncode == 0, done.stderr
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        found = state.get_table(conn, schemas[1], "bigwide")
        assert found is not None and found.document_column == "_overflow"
        assert len(state.layout(conn, schemas[1], found).columns) <= 1500
    _check_rows(pg_dsn, schemas, "bigwide", items)


def test_binary_keys(pg_dsn: str, fast_dynamo: ScanServer, schemas: tuple[str, str]) -> None:
    def b(raw: bytes) -> dict[str, str]:
        return {"B": base64.b64encode(raw).decode()}

    items = [
        {"id": b(bytes([i % 256, i // 256, 0, 255])), "part": b(bytes([i % 7])), "v": {"N": str(i)}}
        for i in range(3000)
    ]
    _serve(fast_dynamo, "blobkeys", [orjson.dumps(item) for item in items], keys=(("id", "B"), ("part", "B")))
    done = _migrate(pg_dsn, fast_dynamo, schemas, "blobkeys")
    assert done.returncode == 0, done.stderr
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        found = state.get_table(conn, schemas[1], "blobkeys")
        assert found is not None
        layout = state.layout(conn, schemas[1], found)
        assert reference.check_table(conn, schemas[0], "blobkeys", layout, items) == len(items)
        pk = conn.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'p'",
            [sql.Identifier(schemas[0], "blobkeys").as_string(conn)],
        ).fetchone()
        assert pk == ("PRIMARY KEY (id, part)",)


def test_rows_postgresql_cannot_store_become_rejects(
    pg_dsn: str, fast_dynamo: ScanServer, schemas: tuple[str, str]
) -> None:
    # Before: the COPY failed on such a row and the worker crashed, on every rerun.
    rng = random.Random(3)
    items: list[dict[str, Any]] = [{"pk": {"S": f"k{i}"}, "sk": {"S": str(i)}, "v": {"S": "x"}} for i in range(600)]
    # A row past PostgreSQL's 8 kB page: 1,100 small numbers, each a column that cannot be TOASTed.
    wide = {"pk": {"S": "wide"}, "sk": {"S": "1"}} | {f"n{j}": {"N": f"{j}.123456"} for j in range(1100)}
    # DynamoDB's longest keys (2,048 and 1,024 bytes), past what a btree entry holds (2,704 bytes).
    long_key = {
        "pk": {"S": "long" + "".join(rng.choices(string.ascii_letters, k=2044))},
        "sk": {"S": "".join(rng.choices(string.ascii_letters, k=1024))},
        "v": {"S": "y"},
    }
    items[150:150] = [wide]
    items[400:400] = [long_key]
    _serve(fast_dynamo, "unstorable", [orjson.dumps(item) for item in items], keys=(("pk", "S"), ("sk", "S")))
    done = _migrate(pg_dsn, fast_dynamo, schemas, "unstorable", "--workers", "2")
    assert done.returncode == 1, done.stderr
    message = " ".join(done.stderr.split())
    assert "Traceback" not in message and "2 item(s) could not be represented" in message, message
    rejects = _rejects(pg_dsn, schemas[1], "unstorable")
    assert sorted(json.loads(k)["pk"]["S"][:4] for k, _ in rejects) == ["long", "wide"], rejects
    assert all("PostgreSQL cannot store this row" in r for _, r in rejects), rejects
    assert any("row is too big" in r for _, r in rejects) and any("index row size" in r for _, r in rejects)
    _check_rows(pg_dsn, schemas, "unstorable", [i for i in items if i is not wide and i is not long_key])
    again = _migrate(pg_dsn, fast_dynamo, schemas, "unstorable")
    assert again.returncode == 1 and len(_rejects(pg_dsn, schemas[1], "unstorable")) == 2
