"""`podyn-fast migrate` end to end: the installed command, moto over HTTP, a real PostgreSQL.

Every test creates its DynamoDB tables in moto (reset per test), runs the command as a user does (a
subprocess with fake AWS credentials in its environment, its own target and state schemas), and
checks exit code, messages and what PostgreSQL holds. Rows are compared with the items read back
through boto3's own Scan, using the independent reference (tests/reference.py) and the layout the
state schema recorded.
"""

from __future__ import annotations

import json
import random
import re
import socket
from collections import Counter
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow

from tests import reference
from tests.moto_migrate import (
    _URL_ENV,
    MAX_IDENT_BYTES,
    Migrator,
    assert_ok,
    assert_refused,
    check_loaded,
    column_of,
    create_table,
    every_type,
    expect_indexes,
    has_nul,
    pg_indexes,
    pg_tables,
    put_items,
    recorded_layout,
    registry,
    snapshot,
    source_items,
    state_rows,
    table_state,
)
from tests.reference import STRINGS

# --------------------------------------------------------------------------------------------
# 1. Several tables at once: keys of every type, GSIs and LSIs, every attribute type


LONG_INDEX = "by_country_" + "c" * 80


def test_all_tables_every_type_and_index(migrate: Migrator, dynamodb: Any, pg: psycopg.Connection[TupleRow]) -> None:
    rng = random.Random(3)
    indexes: dict[str, dict[str, list[tuple[str, str]]]] = {
        "users": {"by_email": [("email", "S")], LONG_INDEX: [("country", "S")]},
        "events": {"by_kind": [("device", "S"), ("kind", "S")], "by_day": [("day", "N"), ("ts", "N")]},
        "blobs": {"by_email": [("checksum", "B")]},
        "counters": {},
    }
    # users: partition key only (S), two GSIs, one named far past 63 bytes.
    create_table(dynamodb, "users", [("user_id", "S")], gsis=indexes["users"])
    users = []
    for i in range(150):
        item = every_type(rng, i) | {"user_id": {"S": f"user#{i}·{STRINGS[i % len(STRINGS)]}"}}
        if i % 4:
            item["email"] = {"S": f"u{i}@example.com"}
        if i % 5:
            item["country"] = {"S": ["FR", "DE", "名前"][i % 3]}
        users.append(item)
    # events: S partition and N sort key (written in exponent forms), an LSI and a two-key GSI.
    create_table(
        dynamodb,
        "events",
        [("device", "S"), ("ts", "N")],
        gsis={"by_day": indexes["events"]["by_day"]},
        lsis={"by_kind": ("kind", "S")},
    )
    forms = ["{}", "{}.0", "{}E0", "{}0e-1", "{}00E-2"]
    events = []
    for i in range(150):
        item = every_type(rng, i) | {"device": {"S": f"dev{i % 10}"}, "ts": {"N": forms[i % 5].format(i + 1)}}
        item["kind"] = {"S": ["click", "view"][i % 2]}
        item["day"] = {"N": str(i % 3)}
        events.append(item)
    # blobs: S partition key, B sort key, a GSI on a B attribute named like an index of users.
    # (A B partition key is left out: moto's parallel Scan fails on one with HTTP 500.)
    create_table(dynamodb, "blobs", [("owner", "S"), ("id", "B")], gsis=indexes["blobs"])
    blobs = [
        {"owner": {"S": f"o{i % 3}"}, "id": {"B": bytes([i, 0, 255 - i])}, "checksum": {"B": rng.randbytes(4)}}
        | ({"body": {"S": "x" * i}} if i % 2 else {"body": {"N": str(i)}})
        for i in range(60)
    ]
    # counters: N partition key only, no index; keys in several forms, distinct by value.
    create_table(dynamodb, "counters", [("n", "N")])
    counters = [
        {"n": {"N": [f"{i}E+2", f"-{i}.5", f"{i}e-3", f"1{i:03d}"][i % 4]}, "c": {"N": str(i)}} for i in range(40)
    ]
    for name, items in [("users", users), ("events", events), ("blobs", blobs), ("counters", counters)]:
        put_items(dynamodb, name, items)

    run = migrate()  # no --table: every table ListTables returns
    assert_ok(run)
    written = {"users": users, "events": events, "blobs": blobs, "counters": counters}
    for name, items in written.items():
        line = rf"│ {name} │ {len(items)} │ 0 │ [^│]+ │ [^│]+ │ [^│]+ │ loaded │"
        assert re.search(line, run.text), f"no summary line for {name}:\n{run}"

    found = pg_indexes(pg, migrate.target)
    names = [ix.name for ix in found]
    assert len(names) == len(set(names)), names
    assert all(len(n.encode()) <= MAX_IDENT_BYTES for n in names), names
    assert len(found) == len(indexes) + sum(map(len, indexes.values())), found
    for name, table_indexes in indexes.items():
        expect_indexes(pg, migrate.state, name, table_indexes, found)
        items = source_items(dynamodb, name)
        assert len(items) == len(written[name])
        layout = check_loaded(pg, migrate.state, name, items)
        assert table_state(pg, migrate.state, name)["phase"] == "loaded"
        if name in ("users", "events"):
            # Every column type is there: S, N, B, BOOL, SS, NS, BS, and L / M as jsonb.
            assert {t for _, t, _ in layout.columns} == {
                "text", "numeric", "bytea", "boolean", "text[]", "numeric[]", "bytea[]", "jsonb"
            }  # fmt: skip
            # The clash: one type keeps the name, the other gets its type as suffix.
            ip = {t: c for a, t, c in layout.columns if a == "ip"}
            assert set(ip) == {"text", "boolean"}, ip
            first = "text" if ip["text"] == "ip" else "boolean"
            other = "boolean" if first == "text" else "text"
            assert (ip[first], ip[other]) == ("ip", f"ip_{other}"), ip
    assert pg_tables(pg, migrate.target) == set(indexes)


def test_table_option_comma_list_and_repeated(
    migrate: Migrator, dynamodb: Any, pg: psycopg.Connection[TupleRow]
) -> None:
    for name in ("alpha", "beta", "gamma"):
        create_table(dynamodb, name, [("k", "S")])
        put_items(dynamodb, name, [{"k": {"S": f"{name}{i}"}, "v": {"N": str(i)}} for i in range(5)])

    assert_ok(migrate("--table", "alpha,beta"))
    assert pg_tables(pg, migrate.target) == {"alpha", "beta"}
    recorded = pg.execute(sql.SQL("SELECT table_name FROM {}.tables").format(sql.Identifier(migrate.state))).fetchall()
    assert {r[0] for r in recorded} == {"alpha", "beta"}

    assert_ok(migrate("-t", "gamma", "--table", "alpha"))
    assert pg_tables(pg, migrate.target) == {"alpha", "beta", "gamma"}
    for name in ("alpha", "beta", "gamma"):
        check_loaded(pg, migrate.state, name, source_items(dynamodb, name))


def test_index_names_do_not_collide(migrate: Migrator, dynamodb: Any, pg: psycopg.Connection[TupleRow]) -> None:
    """PostgreSQL index names are schema-wide and share a namespace with tables: "<table>_<index>"
    collides for table aaa_bbb / index ccc and table aaa / index bbb_ccc, for an index named pkey
    (the primary key's own index), and for table xxx / index yyy next to a table named xxx_yyy."""
    indexes: dict[str, dict[str, list[tuple[str, str]]]] = {
        "aaa_bbb": {"ccc": [("c", "S")]},
        "aaa": {"bbb_ccc": [("c", "S")], "pkey": [("d", "S")]},
        "xxx_yyy": {},
        "xxx": {"yyy": [("c", "S")]},
    }
    for name, table_indexes in indexes.items():
        create_table(dynamodb, name, [("pk", "S")], gsis=table_indexes)
        put_items(dynamodb, name, [{"pk": {"S": f"{name}{i}"}, "c": {"S": "c"}, "d": {"S": "d"}} for i in range(3)])

    assert_ok(migrate())
    found = pg_indexes(pg, migrate.target)
    assert len({ix.name for ix in found}) == len(found)
    missing = {}
    for name, table_indexes in indexes.items():
        try:
            expect_indexes(pg, migrate.state, name, table_indexes, found)
        except AssertionError:
            missing[name] = (sorted(table_indexes), sorted(ix.name for ix in found if ix.table == name))
    assert missing == {}, f"(DynamoDB indexes, PostgreSQL indexes) per table: {missing}"


def test_table_names_longer_than_63_bytes(migrate: Migrator, dynamodb: Any, pg: psycopg.Connection[TupleRow]) -> None:
    """DynamoDB table names run to 255 characters; two that share their first 63 bytes must still
    land in two PostgreSQL tables, each named within 63 bytes (design: cut plus a hash suffix)."""
    names = ["L" * 70 + "_one", "L" * 70 + "_two"]
    for name in names:
        create_table(dynamodb, name, [("pk", "S")])
        put_items(dynamodb, name, [{"pk": {"S": f"{name[-3:]}{i}"}, "v": {"S": name[-3:]}} for i in range(3)])

    run = migrate()
    assert_ok(run)
    created = pg_tables(pg, migrate.target)
    assert len(created) == 2, created
    targets = [table_state(pg, migrate.state, name)["target_table"] for name in names]
    assert set(targets) == created, targets
    for name in names:
        check_loaded(pg, migrate.state, name, source_items(dynamodb, name))


# --------------------------------------------------------------------------------------------
# 2. -m jsonb and --lower-case-column-names


def test_jsonb_mode(migrate: Migrator, dynamodb: Any, pg: psycopg.Connection[TupleRow]) -> None:
    rng = random.Random(5)
    create_table(
        dynamodb,
        "docs",
        [("pk", "S"), ("sk", "N")],
        gsis={"by_owner": [("owner", "S")]},
        lsis={"by_rank": ("rank", "N")},
    )
    items = []
    for i in range(80):
        item = every_type(rng, i) | {"pk": {"S": f"doc{i % 9}"}, "sk": {"N": f"{i}.{i % 3}E{i % 4}"}}
        if i % 2:
            item["owner"] = {"S": f"owner{i % 4}"}
        if i % 3:
            item["rank"] = {"N": f"{i}e-1"}
        items.append(item)
    # U+0000 cannot be in jsonb either: this item is a reject in jsonb mode too.
    items[17]["map"] = {"M": {"bad": {"S": "nul\x00here"}}}
    put_items(dynamodb, "docs", items)

    run = migrate("-m", "jsonb")
    assert run.returncode == 1, str(run)
    assert "1 item(s) could not be represented" in run.err, str(run)

    layout, schema, target = recorded_layout(pg, migrate.state, "docs")
    assert layout.mode == "jsonb"
    assert layout.document == "data"
    # Keys, then the indexes' key attributes, then the whole item: no column per attribute.
    assert layout.columns == [
        ("pk", "text", "pk"),
        ("sk", "numeric", "sk"),
        ("owner", "text", "owner"),
        ("rank", "numeric", "rank"),
    ]
    source = source_items(dynamodb, "docs")
    nul = [it for it in source if has_nul(it)]
    assert len(nul) == 1
    reference.check_table(pg, schema, target, layout, [it for it in source if it not in nul])
    expect_indexes(
        pg,
        migrate.state,
        "docs",
        {"by_owner": [("owner", "S")], "by_rank": [("pk", "S"), ("rank", "N")]},
        pg_indexes(pg, schema),
    )
    rejects = pg.execute(sql.SQL("SELECT key, item FROM {}.rejects").format(sql.Identifier(migrate.state))).fetchall()
    assert [(json.loads(k), json.loads(bytes(i))) for k, i in rejects] == [
        ({"pk": nul[0]["pk"], "sk": nul[0]["sk"]}, nul[0])
    ]


def test_jsonb_mode_with_an_attribute_named_data(
    migrate: Migrator, dynamodb: Any, pg: psycopg.Connection[TupleRow]
) -> None:
    """The document column is called data; a key attribute of that name must not break the load."""
    create_table(dynamodb, "payloads", [("data", "S")])
    put_items(dynamodb, "payloads", [{"data": {"S": f"d{i}"}, "v": {"N": str(i)}} for i in range(5)])

    run = migrate("-m", "jsonb")
    assert_ok(run)
    layout, _, _ = recorded_layout(pg, migrate.state, "payloads")
    assert layout.document is not None and layout.document != "data"
    check_loaded(pg, migrate.state, "payloads", source_items(dynamodb, "payloads"))


def test_lower_case_column_names(migrate: Migrator, dynamodb: Any, pg: psycopg.Connection[TupleRow]) -> None:
    create_table(dynamodb, "People", [("Id", "S")], gsis={"by_email": [("Email", "S")]})
    items = [
        {
            "Id": {"S": f"p{i}"},
            "ID": {"N": str(i)},
            "id": {"S": f"lower{i}"},
            "iD": {"BOOL": i % 2 == 0},
            "Name": {"S": f"n{i}"},
            "NAME": {"S": f"N{i}"},
            "Email": {"S": f"p{i}@example.com"},
            "ÉTÉ": {"N": "1.5"},
        }
        for i in range(20)
    ]
    put_items(dynamodb, "People", items)

    assert_ok(migrate("--lower-case-column-names"))
    layout = check_loaded(pg, migrate.state, "People", source_items(dynamodb, "People"))
    names = layout.column_names
    assert all(n == n.lower() for n in names), names
    assert len(set(names)) == len(names) == 8, names
    assert column_of(layout, "Id", "text") == "id"  # the key keeps the plain name
    assert column_of(layout, "Email", "text") == "email"
    assert column_of(layout, "ÉTÉ", "numeric") == "été"
    _, schema, target = recorded_layout(pg, migrate.state, "People")
    assert target == "People"  # table names are left as they are
    expect_indexes(pg, migrate.state, "People", {"by_email": [("Email", "S")]}, pg_indexes(pg, schema))


# --------------------------------------------------------------------------------------------
# 3 and 4. Rejects; reruns


def test_rejects_then_reruns(migrate: Migrator, dynamodb: Any, pg: psycopg.Connection[TupleRow]) -> None:
    rng = random.Random(11)
    create_table(dynamodb, "orders", [("pk", "S"), ("sk", "N")])
    items = [every_type(rng, i) | {"pk": {"S": f"order{i // 4}"}, "sk": {"N": str(i % 4)}} for i in range(120)]
    # U+0000 anywhere a text or jsonb value would hold it: a top-level S, an SS member, inside
    # L and M, in a map key, and in the partition key itself.
    items[5]["s"] = {"S": "a\x00b"}
    items[16]["tags"] = {"SS": ["ok", "n\x00l"]}
    items[27]["list"] = {"L": [{"S": "fine"}, {"S": "\x00"}]}
    items[38]["map"] = {"M": {"deep": {"M": {"x": {"S": "z\x00"}}}}}
    items[49]["map"] = {"M": {"k\x00ey": {"N": "1"}}}
    items[60]["pk"] = {"S": "order\x00nul"}
    put_items(dynamodb, "orders", items)
    source = source_items(dynamodb, "orders")
    assert len(source) == 120
    bad = [it for it in source if has_nul(it)]
    assert len(bad) == 6

    first = migrate("--workers", "2")
    assert first.returncode == 1, str(first)
    assert "Traceback" not in first.text
    assert f"6 item(s) could not be represented; they are in {migrate.state}.rejects" in first.err, str(first)
    layout, schema, target = recorded_layout(pg, migrate.state, "orders")
    reference.check_table(pg, schema, target, layout, [it for it in source if it not in bad])

    rejects = pg.execute(
        sql.SQL("SELECT table_name, key, item, reason FROM {}.rejects").format(sql.Identifier(migrate.state))
    ).fetchall()
    assert len(rejects) == 6
    by_key = {(it["pk"]["S"], it["sk"]["N"]): it for it in bad}
    for table_name, key, raw, reason in rejects:
        assert table_name == "orders"
        k = json.loads(key)
        assert set(k) == {"pk", "sk"}
        # The raw bytes as DynamoDB sent them: the same item as boto3 parsed it.
        assert json.loads(bytes(raw)) == by_key.pop((k["pk"]["S"], k["sk"]["N"]))
        assert "U+0000" in reason, reason
    assert by_key == {}

    # The same command again: nothing is scanned or written, and it says the same.
    before = (
        snapshot(pg, schema, target),
        *(state_rows(pg, migrate.state, t) for t in ("tables", "segments", "rejects")),
    )
    again = migrate("--workers", "2")
    assert again.returncode == first.returncode, str(again)
    assert "6 item(s) could not be represented" in again.err, str(again)
    after = (
        snapshot(pg, schema, target),
        *(state_rows(pg, migrate.state, t) for t in ("tables", "segments", "rejects")),
    )
    assert after == before
    assert again.seconds < 10, str(again)

    # Another mode, or other segments, than the first run: refused, with what to do.
    segments = table_state(pg, migrate.state, "orders")["total_segments"]
    refused = migrate("-m", "jsonb")
    assert_refused(refused, "'orders'", "mode='columns'", "'jsonb'")
    refused = migrate("--segments", str(segments + 1))
    assert_refused(refused, "'orders'", f"{segments} segments", f"set it to {segments}")
    refused = migrate("--lower-case-column-names")
    assert_refused(refused, "lower_case")
    # ... while the recorded number of segments is accepted.
    same = migrate("--segments", str(segments))
    assert same.returncode == first.returncode, str(same)
    assert "could not be represented" in same.text
    assert (
        snapshot(pg, schema, target),
        *(state_rows(pg, migrate.state, t) for t in ("tables", "segments", "rejects")),
    ) == before


def test_attribute_name_with_nul_is_a_reject(
    migrate: Migrator, dynamodb: Any, pg: psycopg.Connection[TupleRow]
) -> None:
    """A column cannot be named with U+0000: the item is a reject, not the end of the load."""
    create_table(dynamodb, "names", [("pk", "S")])
    items = [{"pk": {"S": f"k{i}"}, "v": {"N": str(i)}} for i in range(10)]
    items[4]["bad\x00name"] = {"S": "x"}
    put_items(dynamodb, "names", items)

    run = migrate()
    assert run.returncode == 1, str(run)
    assert "Traceback" not in run.text
    assert "1 item(s) could not be represented" in run.err, str(run)
    source = source_items(dynamodb, "names")
    check_loaded(pg, migrate.state, "names", [it for it in source if it["pk"]["S"] != "k4"])
    reasons = pg.execute(sql.SQL("SELECT key, reason FROM {}.rejects").format(sql.Identifier(migrate.state))).fetchall()
    assert [json.loads(k) for k, _ in reasons] == [{"pk": {"S": "k4"}}]


# --------------------------------------------------------------------------------------------
# 5. Errors and where the PostgreSQL URL comes from


def test_unknown_table(migrate: Migrator, dynamodb: Any, pg: psycopg.Connection[TupleRow]) -> None:
    create_table(dynamodb, "known", [("pk", "S")])
    put_items(dynamodb, "known", [{"pk": {"S": f"k{i}"}} for i in range(3)])

    assert_refused(migrate("--table", "no_such_table"), "no_such_table")
    refused = migrate("--table", "known,no_such_table")
    assert_refused(refused, "no_such_table")
    assert "not found" in refused.text.lower(), str(refused)
    # The known table still loads on its own afterwards.
    assert_ok(migrate("--table", "known"))
    check_loaded(pg, migrate.state, "known", source_items(dynamodb, "known"))


def test_no_postgres_url_means_a_dry_run(migrate: Migrator, dynamodb: Any, pg: psycopg.Connection[TupleRow]) -> None:
    create_table(dynamodb, "t", [("pk", "S")])
    put_items(dynamodb, "t", [{"pk": {"S": f"k{i}"}} for i in range(3)])
    for env in ({}, {"PODYN_POSTGRES_URL": "", "DATABASE_URL": ""}):
        run = migrate("--table", "t", no_url=True, env=env)
        assert_ok(run)
        assert "dry run" in run.err and "COPY" in run.stdout, run
    assert pg.execute("SELECT to_regclass(%s)", [f'"{migrate.target}".t']).fetchone() == (None,)
    # A URL from either variable is a real load: nothing printed on stdout.
    for var in _URL_ENV:
        run = migrate("--table", "t", no_url=True, env={var: migrate.dsn})
        assert_ok(run)
        assert "COPY" not in run.stdout, run
    check_loaded(pg, migrate.state, "t", source_items(dynamodb, "t"))


# The password in every bad URL: it must not appear in any output.
LEAK_MARK = "Pw7f3a9cSecret"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _server(pg_dsn: str) -> dict[str, str]:
    params = {k: str(v) for k, v in conninfo_to_dict(pg_dsn).items() if v is not None}
    params.setdefault("host", "127.0.0.1")
    params.setdefault("port", "5432")
    return params


BAD_URLS = {
    "unreachable": "postgresql://postgres:{pw}@127.0.0.1:{free}/postgres",
    "unknown_role": "postgresql://no_such_role_x:{pw}@{host}:{port}/postgres",
    "unknown_database": "postgresql://{user}:{pw}@{host}:{port}/no_such_db_x",
    "jdbc_unknown_role": "jdbc:postgresql://{host}:{port}/postgres?user=no_such_role_x&password={pw}",
    "keyword_value": "host=127.0.0.1 port={free} user=postgres password={pw}",
    "ssl_required": "postgresql://{user}:{pw}@{host}:{port}/postgres?sslmode=require&connect_timeout=5",
    "bad_option": "postgresql://{user}:{pw}@{host}:{port}/postgres?no_such_option=1",
    # A password pasted unencoded into a URL: '%' followed by what is not two hex digits.
    "unencoded_percent": "postgresql://{user}:{pw}%zz@{host}:{port}/postgres",
}


@pytest.mark.parametrize("case", sorted(BAD_URLS))
def test_password_is_never_printed(case: str, migrate: Migrator, pg_dsn: str) -> None:
    server = _server(pg_dsn)
    if server["host"].startswith("/") and case not in {"keyword_value", "unreachable"}:
        pytest.skip("the test server is reached by a Unix socket; these URLs need TCP")
    url = BAD_URLS[case].format(
        pw=LEAK_MARK, free=_free_port(), host=server["host"], port=server["port"], user=server.get("user", "postgres")
    )
    runs = [migrate("-t", "t1", url=url)]
    if case == "unknown_role":  # the same from the environment
        runs.append(migrate("-t", "t1", no_url=True, env={"PODYN_POSTGRES_URL": url}))
    for run in runs:
        assert run.returncode == 1, str(run)
        assert "error:" in run.text and "Traceback" not in run.text, str(run)
        # Not even split across a wrapped line.
        assert LEAK_MARK not in run.stdout + run.stderr and LEAK_MARK not in "".join(run.text.split()), str(run)


def _jdbc_url(pg_dsn: str) -> str:
    params = _server(pg_dsn)
    host, port, dbname = params.pop("host"), params.pop("port"), params.pop("dbname", "postgres")
    if host.startswith("/"):  # a Unix socket directory goes in the query
        params["host"] = host
        host = ""
    return f"jdbc:postgresql://{host}:{port}/{quote(dbname)}?{urlencode(params)}"


def test_url_from_environment_and_jdbc(
    migrate: Migrator, dynamodb: Any, pg: psycopg.Connection[TupleRow], pg_dsn: str
) -> None:
    names = ["from_podyn_env", "from_database_url", "podyn_env_first", "jdbc_url", "flag_first"]
    for name in names:
        create_table(dynamodb, name, [("pk", "N")])
        put_items(dynamodb, name, [{"pk": {"N": str(i)}, "v": {"S": name}} for i in range(3)])
    nowhere = f"postgresql://postgres:{LEAK_MARK}@127.0.0.1:{_free_port()}/postgres"

    assert_ok(migrate("-t", names[0], "--workers", "1", no_url=True, env={"PODYN_POSTGRES_URL": pg_dsn}))
    assert_ok(migrate("-t", names[1], "--workers", "1", no_url=True, env={"DATABASE_URL": pg_dsn}))
    assert_ok(
        migrate(
            "-t", names[2], "--workers", "1", no_url=True, env={"PODYN_POSTGRES_URL": pg_dsn, "DATABASE_URL": nowhere}
        )
    )
    assert_ok(migrate("-t", names[3], "--workers", "1", url=_jdbc_url(pg_dsn)))
    assert_ok(migrate("-t", names[4], "--workers", "1", "-u", pg_dsn, no_url=True, env={"PODYN_POSTGRES_URL": nowhere}))
    # The Podyn spelling of the option, with a JDBC URL.
    again = migrate("-t", names[3], "--postgres-jdbc-url", _jdbc_url(pg_dsn), no_url=True)
    assert_ok(again)
    assert pg_tables(pg, migrate.target) == set(names)
    for name in names:
        check_loaded(pg, migrate.state, name, source_items(dynamodb, name))


# --------------------------------------------------------------------------------------------
# 6. Workers and scan rate


def _content(
    conn: psycopg.Connection[Any], state: str, table: str
) -> dict[tuple[Any, ...], dict[tuple[str, str], Any]]:
    """A table's rows by key, each as {(attribute, column type): value} (NULLs left out)."""
    layout, schema, target = recorded_layout(conn, state, table)
    rows = reference.read_rows(conn, schema, target, layout)
    by_column = {c: (a, t) for a, t, c in layout.columns}
    return {
        key: {by_column[c]: v for c, v in row.items() if v is not None and c in by_column} for key, row in rows.items()
    }


def test_one_and_three_workers_load_the_same(
    migrate: Migrator, dynamodb: Any, pg: psycopg.Connection[TupleRow]
) -> None:
    rng = random.Random(17)
    create_table(dynamodb, "metrics", [("pk", "S"), ("sk", "N")], gsis={"by_g": [("g", "S")]})
    items = [
        every_type(rng, i) | {"pk": {"S": f"m{i // 5}"}, "sk": {"N": f"{i % 5}e1"}, "g": {"S": f"g{i % 3}"}}
        for i in range(200)
    ]
    put_items(dynamodb, "metrics", items)
    source = source_items(dynamodb, "metrics")

    one = migrate("--workers", "1")
    target3, state3 = migrate.schema("w3"), migrate.schema("w3s")
    three = migrate("--workers", "3", target=target3, state=state3)
    assert_ok(one)
    assert_ok(three)
    check_loaded(pg, migrate.state, "metrics", source)
    check_loaded(pg, state3, "metrics", source)
    assert _content(pg, migrate.state, "metrics") == _content(pg, state3, "metrics")
    # The same columns. An attribute seen with several types has one column named after it and
    # the others suffixed; which type came first depends on the order pages arrive in, so only
    # the names of single-type attributes must match.
    one_reg, three_reg = registry(pg, migrate.state, "metrics"), registry(pg, state3, "metrics")
    assert {(a, t) for a, t, _ in one_reg} == {(a, t) for a, t, _ in three_reg}
    types = Counter(a for a, _, _ in one_reg)
    assert sum(n > 1 for n in types.values()) >= 3, types  # the clashes are there to be checked
    single = sorted(r for r in one_reg if types[r[0]] == 1)
    assert single == sorted(r for r in three_reg if types[r[0]] == 1)
    for reg in (one_reg, three_reg):
        for attr, n in types.items():
            if n > 1:
                assert sum(c == attr for a, _, c in reg if a == attr) == (len(attr.encode()) <= MAX_IDENT_BYTES), reg


def test_scan_rate(migrate: Migrator, dynamodb: Any, pg: psycopg.Connection[TupleRow]) -> None:
    create_table(dynamodb, "slow", [("pk", "S")])
    put_items(dynamodb, "slow", [{"pk": {"S": f"k{i}"}, "v": {"S": "x" * 100}} for i in range(40)])

    rate = 2.0
    assert_ok(migrate("--scan-rate", str(rate), "--workers", "1", "--segments", "4"))
    check_loaded(pg, migrate.state, "slow", source_items(dynamodb, "slow"))
    # The pages' requests were paced by the capacity each consumed (moto reports it): all but the
    # last page's units at `rate` units per second lie between planning and the end of the load.
    pages = pg.execute(
        sql.SQL("SELECT pages, capacity FROM {}.segments").format(sql.Identifier(migrate.state))
    ).fetchall()
    total = sum(c for _, c in pages)
    biggest = max(c / n for n, c in pages if n)
    assert total > biggest > 0, pages
    row = table_state(pg, migrate.state, "slow")
    took = (row["loaded_at"] - row["created_at"]).total_seconds()
    assert took >= 0.9 * (total - biggest) / rate, (took, pages)
    # The short form, on a rerun (which has nothing left to read).
    assert_ok(migrate("-r", "0.5", "--workers", "1"))
