"""`migrate --export`: a DynamoDB export in S3 (moto's server, written by tests/servers/exports.py as
DynamoDB lays it out) loaded by the real command, exactly, resumably, a data file per segment."""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
import subprocess
import time
from datetime import datetime, timezone
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from podyn_fast import state
from tests import reference
from tests.corpus import CORPUS
from tests.fix_pg import committed_items, segment_holders
from tests.moto_migrate import (
    PODYN,
    Migrator,
    assert_ok,
    assert_refused,
    create_table,
    put_items,
    run_psql,
    source_items,
    table_columns,
    table_rows,
)
from tests.proc import running
from tests.servers.exports import WrittenExport, write_export
from tests.servers.scan import typical_item
from tests.servers.streams import StreamsServer
from tests.servers.tcp_proxy import TcpProxy


def _items(n: int) -> list[dict[str, Any]]:
    """Typical items and every case of the edge corpus that loads, keyed as reference.KEYS."""
    items = [json.loads(typical_item(i)) | {"pk": {"S": f"t{i}"}, "sk": {"N": str(i)}} for i in range(n)]
    for k, case in enumerate(c for c in CORPUS if c["expect"] == "ok" and "item" in c and "modes" not in c):
        items.append(case["item"] | {"pk": {"S": f"corpus {k}"}, "sk": {"N": "0"}})
    return items


def _export(s3: Any, dynamodb: Any, items: list[dict[str, Any]], files: int) -> WrittenExport:
    create_table(dynamodb, "Orders", reference.KEYS)  # DescribeTable's key schema; the rows come from S3
    return write_export(s3, s3.bucket, "exports/nightly", "Orders", items, partition_key="pk", files=files)


def _args(migrate: Migrator, written: WrittenExport, *more: str) -> list[str]:
    return ["--export", written.url, "--s3-endpoint-url", migrate.endpoint, *more]


def _check(migrate: Migrator, items: list[dict[str, Any]]) -> None:
    with psycopg.connect(migrate.dsn, autocommit=True) as conn:
        found = state.get_table(conn, migrate.state, "Orders")
        assert found is not None and found.phase in ("loaded", "following") and found.source is not None
        layout = state.layout(conn, migrate.state, found)
        reference.check_table(conn, migrate.target, found.target_table, layout, items)


def test_an_export_loads_exactly(migrate: Migrator, dynamodb: Any, s3: Any) -> None:
    items = _items(4000)
    written = _export(s3, dynamodb, items, files=5)
    # The S3 endpoint from botocore's own variable (the README's promise), named by host.
    local = migrate.endpoint.replace("127.0.0.1", "localhost")
    done = migrate(
        "--export", written.url, "--workers", "2", "--progress", "--progress-every", "0.05",
        env={"AWS_ENDPOINT_URL_S3": local},
    )  # fmt: skip
    assert_ok(done)
    _check(migrate, items)
    # Progress in the export's terms: its data files, and the items its manifest counts.
    said = [x for x in done.stderr.splitlines() if x.startswith("Orders: ") and " items" in x]
    assert said and all(f"of ~{len(items):,} items" in x and " of 6 files, " in x for x in said), done.stderr
    with psycopg.connect(migrate.dsn, autocommit=True) as conn:
        p = state.progress(conn, migrate.state, "Orders")
    assert (p.total_segments, p.segments_done, p.items) == (6, 6, len(items))  # 5 files and an empty one
    assert_ok(migrate(*_args(migrate, written)))  # nothing left: the same rows
    _check(migrate, items)


def test_an_export_in_jsonb_mode_and_with_lower_case_columns(migrate: Migrator, dynamodb: Any, s3: Any) -> None:
    # The options of the codec work on an export's lines as on a Scan's pages.
    items = [*_items(800), json.loads(typical_item(9)) | {"pk": {"S": "u"}, "sk": {"N": "1"}, "MixedCase": {"N": "1"}}]
    written = _export(s3, dynamodb, items, files=3)
    for option in ("-m jsonb", "-lc"):
        target, state_schema = migrate.schema(option[-2:]), migrate.schema(f"{option[-2:]}_st")
        done = migrate(*_args(migrate, written, *option.split()), target=target, state=state_schema)
        assert_ok(done)
        with psycopg.connect(migrate.dsn, autocommit=True) as conn:
            found = state.get_table(conn, state_schema, "Orders")
            assert found is not None
            layout = state.layout(conn, state_schema, found)
            reference.check_table(conn, target, found.target_table, layout, items)
            names = layout.column_names
        if option == "-lc":
            assert "mixedcase" in names and "MixedCase" not in names, names
        else:
            assert names == ["pk", "sk", "data"], names


def test_sigkill_at_random_moments_then_rerun(migrate: Migrator, dynamodb: Any, s3: Any) -> None:
    items = _items(60_000)
    written = _export(s3, dynamodb, items, files=8)
    rng = random.Random(5)
    cmd = [*migrate.command(), *_args(migrate, written, "--workers", "2", "--batch-mb", "1")]
    kills = 0
    for _ in range(3):
        before = committed_items(migrate.dsn, migrate.state, "Orders")
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while proc.poll() is None and committed_items(migrate.dsn, migrate.state, "Orders") <= before:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.15))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 2, f"only {kills} of 3 runs were killed in the middle"
    assert_ok(migrate(*_args(migrate, written)))
    _check(migrate, items)


def test_two_hosts_share_an_export_and_the_survivor_finishes_it(
    migrate: Migrator, dynamodb: Any, s3: Any, moto_endpoint: str
) -> None:
    # Two migrates (hosts) load one export at once, two workers each, over a slow network; once
    # both hold data files, one is killed: the other takes its files over and ends with every item
    # exactly once.
    items = _items(30_000)
    written = _export(s3, dynamodb, items, files=12)
    proxy = TcpProxy(int(moto_endpoint.rsplit(":", 1)[1]))
    proxy.delay = 0.1
    try:
        cmd = [*migrate.command(), "--export", written.url, "--s3-endpoint-url", proxy.url, "--workers", "2"]
        with running(cmd) as doomed, running(cmd) as survivor:
            # Two workers of each: three holders or more means both hosts hold files.
            doomed.wait_for(lambda: len(set(segment_holders(migrate.dsn, migrate.state))) >= 3, "both hosts hold")
            doomed.proc.kill()  # its workers follow it (they watch their parent)
            assert survivor.finish(timeout=240) == 0, survivor.stderr()
            assert "taking over" in survivor.stderr(), survivor.stderr()
    finally:
        proxy.close()
    _check(migrate, items)
    with psycopg.connect(migrate.dsn, autocommit=True) as conn:
        p = state.progress(conn, migrate.state, "Orders")
    assert (p.segments_done, p.items) == (13, len(items))


def test_a_damaged_data_file_stops_with_nothing_of_it_loaded(migrate: Migrator, dynamodb: Any, s3: Any) -> None:
    items = _items(3000)
    written = _export(s3, dynamodb, items, files=3)
    victim = written.data_keys[1]
    body = s3.get_object(Bucket=s3.bucket, Key=victim)["Body"].read()
    in_victim = {orjson.loads(line)["Item"]["pk"]["S"] for line in gzip.decompress(body).splitlines()}
    damaged = bytearray(body)
    damaged[len(damaged) // 3] ^= 0x01
    s3.put_object(Bucket=s3.bucket, Key=victim, Body=bytes(damaged))
    done = migrate(*_args(migrate, written))
    assert_refused(done, "the file is damaged; nothing")
    assert victim.rsplit("/", 1)[-1] in done.stderr.replace("\n", ""), done.stderr
    with psycopg.connect(migrate.dsn, autocommit=True) as conn:
        found = state.get_table(conn, migrate.state, "Orders")
        assert found is not None
        target = sql.Identifier(migrate.target, found.target_table)
        loaded = {pk for (pk,) in conn.execute(sql.SQL("SELECT pk FROM {}").format(target))}
    assert loaded and not loaded & in_victim, "rows of the damaged file were loaded"


def test_what_does_not_fit_the_export_is_refused_before_anything_is_written(
    migrate: Migrator, dynamodb: Any, s3: Any
) -> None:
    written = _export(s3, dynamodb, _items(10), files=1)
    assert_refused(migrate(*_args(migrate, written, "--table", "Other")), "is an export of table 'Orders'")
    assert_refused(migrate(*_args(migrate, written, "--segments", "4")), "drop --segments", code=2)
    assert_refused(
        migrate("--export", "s3://bucket/not/an/export", "--s3-endpoint-url", migrate.endpoint),
        "not an export's folder",
        code=2,
    )
    with psycopg.connect(migrate.dsn, autocommit=True) as conn:
        assert conn.execute("SELECT to_regnamespace(%s)", [migrate.state]).fetchone() == (None,)
    # A table first loaded by Scan is not then mixed with an export's rows.
    assert_ok(migrate("--table", "Orders"))
    assert_refused(migrate(*_args(migrate, written)), "was first migrated with its snapshot from='a Scan'")


def test_the_dry_run_of_an_export_prints_what_migrate_loads(
    migrate: Migrator, dynamodb: Any, s3: Any, pg: psycopg.Connection[TupleRow], pg_dsn: str
) -> None:
    # Before: --export without a PostgreSQL URL was refused ("the dry run reads by Scan").
    items = _items(2000)
    written = _export(s3, dynamodb, items, files=3)
    dry = migrate.schema("dry")
    printed = migrate(*_args(migrate, written, "--workers", "1"), no_url=True, target=dry)
    assert_ok(printed)
    assert printed.stdout.count("\\.\n") >= 3, printed  # a COPY block per data file at least
    loaded = run_psql(pg_dsn, printed.stdout)
    assert loaded.returncode == 0, loaded.stderr
    assert_ok(migrate(*_args(migrate, written, "--workers", "1")))
    _check(migrate, items)
    assert table_columns(pg, dry, "Orders") == table_columns(pg, migrate.target, "Orders")
    assert table_rows(pg, dry, "Orders") == table_rows(pg, migrate.target, "Orders")


def _streamed_table(dynamodb: Any, items: list[dict[str, Any]]) -> float:
    """The table with its stream on, holding ``items``; returns when the stream was enabled."""
    create_table(dynamodb, "Orders", reference.KEYS)
    spec = {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    dynamodb.update_table(TableName="Orders", StreamSpecification=spec)
    put_items(dynamodb, "Orders", items)
    label = dynamodb.describe_table(TableName="Orders")["Table"]["LatestStreamLabel"]
    return datetime.fromisoformat(label).replace(tzinfo=timezone.utc).timestamp()


def test_an_export_then_the_changes_made_since(migrate: Migrator, dynamodb: Any, s3: Any) -> None:
    # The export holds the table as of its time; what was written after it comes from the stream,
    # which has held every change since a minute before the export's time.
    rng = random.Random(9)
    items = [json.loads(typical_item(i)) | {"pk": {"S": f"t{i}"}, "sk": {"N": str(i)}} for i in range(600)]
    enabled = _streamed_table(dynamodb, items)
    written = write_export(s3, s3.bucket, "x", "Orders", items, partition_key="pk", files=3, export_time=enabled + 61)
    for i in rng.sample(range(600), 100):  # changed, deleted and added after the export
        key = {"pk": {"S": f"t{i}"}, "sk": {"N": str(i)}}
        if i % 3:
            dynamodb.put_item(TableName="Orders", Item=json.loads(typical_item(i + 7)) | key)
        else:
            dynamodb.delete_item(TableName="Orders", Key=key)
    put_items(
        dynamodb,
        "Orders",
        [json.loads(typical_item(i)) | {"pk": {"S": f"new{i}"}, "sk": {"N": "1"}} for i in range(50)],
    )
    done = migrate(*_args(migrate, written, "--follow", "--exit-when-idle", "1"))
    assert_ok(done)
    now = source_items(dynamodb, "Orders")
    _check(migrate, now)
    # status and verify as for a table loaded by Scan; status names the export.
    base = ["--postgres-url", migrate.dsn, "--state-schema", migrate.state]
    shown = subprocess.run([PODYN, "status", *base, "--json"], capture_output=True, text=True, timeout=60, check=False)
    assert shown.returncode == 0, shown.stderr
    (t,) = json.loads(shown.stdout)["tables"]
    assert (t["phase"], t["source"], t["segments_done"], t["segments_total"]) == ("following", written.url, 4, 4), t
    said = subprocess.run([PODYN, "status", *base], capture_output=True, text=True, timeout=60, check=False)
    assert f"Orders: snapshot from the export {written.url}" in " ".join(said.stdout.split()), said.stdout
    aws = ["--endpoint-url", migrate.endpoint, "--region", "us-east-1"]
    verified = subprocess.run([PODYN, "verify", *base, *aws], capture_output=True, text=True, timeout=120, check=False)
    assert verified.returncode == 0 and f"Orders: EQUAL: {len(now)} source items compared" in verified.stdout, verified


def test_a_stream_that_cannot_hold_the_changes_since_the_export_is_refused(
    migrate: Migrator, dynamodb: Any, s3: Any
) -> None:
    items = [json.loads(typical_item(i)) | {"pk": {"S": f"t{i}"}, "sk": {"N": str(i)}} for i in range(20)]
    enabled = _streamed_table(dynamodb, items)
    # Exported before the stream was on: the changes in between are in neither.
    early = write_export(s3, s3.bucket, "e", "Orders", items, partition_key="pk", export_time=enabled - 5)
    assert_refused(migrate(*_args(migrate, early, "--follow")), "was enabled at", "after the export's time")
    # Exported more than a day ago: the stream keeps 24 hours.
    old = write_export(s3, s3.bucket, "o", "Orders", items, partition_key="pk", export_time=enabled - 30 * 3600)
    assert_refused(migrate(*_args(migrate, old, "--follow")), "a stream keeps 24")
    with psycopg.connect(migrate.dsn, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass(%s)", [f"{migrate.target}.Orders"]).fetchone() == (None,)


def _export_to(
    dsn: str | None, server: StreamsServer, s3: Any, schemas: tuple[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    cmd = [PODYN, "migrate", *(["--postgres-url", dsn] if dsn else []), "--endpoint-url", server.endpoint]
    cmd += ["--region", "us-east-1"]
    cmd += ["--target-schema", schemas[0], "--state-schema", schemas[1], "--no-progress", "--table", "Shop"]
    cmd += ["--export-to", f"s3://{s3.bucket}/snapshots", "--s3-endpoint-url", s3.meta.endpoint_url, *args]
    # Only the URL given here: none from a developer's environment.
    env = {k: v for k, v in os.environ.items() if k not in ("PODYN_POSTGRES_URL", "DATABASE_URL")}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False, env=env)


def test_export_to_asks_for_the_export_waits_and_loads_it(
    pg_dsn: str, streams_server: StreamsServer, s3: Any, schemas: tuple[str, str]
) -> None:
    # Our DynamoDB test server answers ExportTableToPointInTime and DescribeExport as DynamoDB
    # does and writes the export into moto's S3 after a while (moto writes no manifest).
    server = streams_server
    server.exports.s3, server.exports.delay = s3, 2.0
    server.create_table("Shop", [("pk", "S"), ("sk", "N")], view_type="NEW_AND_OLD_IMAGES")
    items = [json.loads(typical_item(i)) | {"pk": {"S": f"t{i}"}, "sk": {"N": str(i)}} for i in range(800)]
    for item in items:
        server.put("Shop", item)
    refused = _export_to(pg_dsn, server, s3, schemas)
    assert refused.returncode == 1 and "has no point-in-time recovery" in " ".join(refused.stderr.split())
    assert "update-continuous-backups --table-name Shop" in " ".join(refused.stderr.split()), refused.stderr
    server.exports.enable_pitr("Shop", since=time.time() - 3600)
    done = _export_to(pg_dsn, server, s3, schemas)
    assert done.returncode == 0, done.stderr
    said = " ".join(done.stderr.split())
    assert "requested; waiting for DynamoDB to write it" in said and "export completed" in said, said
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        found = state.get_table(conn, schemas[1], "Shop")
        assert (
            found is not None and found.source is not None and found.source.startswith(f"s3://{s3.bucket}/snapshots/")
        )
        reference.check_table(conn, schemas[0], found.target_table, state.layout(conn, schemas[1], found), items)
    # The same command again is the same export (its client token), with nothing loaded twice.
    server.put("Shop", json.loads(typical_item(5)) | {"pk": {"S": "late"}, "sk": {"N": "0"}})
    again = _export_to(pg_dsn, server, s3, schemas)
    assert again.returncode == 0, again.stderr
    assert len(server.exports.exports) == 1
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        reference.check_table(conn, schemas[0], found.target_table, state.layout(conn, schemas[1], found), items)


def test_export_to_options_are_checked_before_anything_is_asked(
    pg_dsn: str, streams_server: StreamsServer, s3: Any, schemas: tuple[str, str]
) -> None:
    for url, args, why in (
        (pg_dsn, ["--export-time", "yesterday"], "is not an ISO 8601 time"),
        (pg_dsn, ["--export-time", "2999-01-01T00:00:00Z"], "is in the future"),
        (pg_dsn, ["--export", "s3://b/AWSDynamoDB/x"], "give one"),
        (pg_dsn, ["--segments", "3"], "drop --segments"),
        (pg_dsn, ["-s"], "-s alone loads nothing"),
        (None, [], "a dry run asks DynamoDB for no export"),
    ):
        done = _export_to(url, streams_server, s3, schemas, *args)
        assert done.returncode == 2 and why in " ".join(done.stderr.split()), (args, done.stderr)
    assert streams_server.exports.exports == {}
