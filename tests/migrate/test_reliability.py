"""The bad day, for migrate: a source that stalls for 30 seconds, answers cut short, secrets that
must appear nowhere, hostile names, TLS settings reaching libpq, and a worker's memory that must not
grow with the table."""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from typing import Any

import orjson
import psycopg
import pytest
from psycopg import sql
from psycopg.rows import TupleRow

from benches.procs import PeakRss
from podyn_fast import state
from tests import reference
from tests.fix_dynamo import REGION
from tests.fix_pg import committed_items
from tests.fix_scan_server import TYPICAL, TYPICAL_COUNT, migrate_cmd
from tests.moto_migrate import PODYN, Migrator, assert_ok, create_table, put_items
from tests.proc import running
from tests.servers.scan import TYPICAL_KEYS, ScanServer, TableSpec, typical_item


def _exact(dsn: str, schemas: tuple[str, str], table: str, count: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        found = state.get_table(conn, schemas[1], table)
        assert found is not None
        items = (orjson.loads(typical_item(i)) for i in range(count))
        layout = state.layout(conn, schemas[1], found)
        assert reference.check_table(conn, schemas[0], table, layout, items) == count


def test_source_stalls_for_30_seconds(pg_dsn: str, fast_dynamo: ScanServer, schemas: tuple[str, str]) -> None:
    # Three pages in, with most of the table still to read (8 segments of more than a 1 MB page
    # each), every Scan waits 30 s.
    fast_dynamo.stall(30, after_pages=3)
    cmd = migrate_cmd(pg_dsn, fast_dynamo.endpoint, schemas, "--table", TYPICAL, "--batch-mb", "1", "--segments", "8")
    started = time.monotonic()
    with running(cmd) as proc:
        assert proc.finish(timeout=240) == 0, proc.stderr()
    assert time.monotonic() - started >= 30
    _exact(pg_dsn, schemas, TYPICAL, TYPICAL_COUNT)


def test_answers_cut_short_are_asked_again(pg_dsn: str, fast_dynamo: ScanServer, schemas: tuple[str, str]) -> None:
    fast_dynamo.bad_body_rate = 0.3
    served = fast_dynamo.bad_bodies_served
    cmd = migrate_cmd(pg_dsn, fast_dynamo.endpoint, schemas, "--table", TYPICAL, "--batch-mb", "1", "--segments", "16")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    # The fault generator is seeded: with 16 segments, several of the ~25 answers are cut short.
    assert fast_dynamo.bad_bodies_served > served
    assert "unreadable answer" in done.stderr
    _exact(pg_dsn, schemas, TYPICAL, TYPICAL_COUNT)


def test_a_source_that_only_answers_garbage_stops_with_a_message(
    pg_dsn: str, fast_dynamo: ScanServer, schemas: tuple[str, str]
) -> None:
    fast_dynamo.bad_body_rate = 1.0
    cmd = migrate_cmd(pg_dsn, fast_dynamo.endpoint, schemas, "--table", TYPICAL, "--segments", "2")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 1
    message = " ".join(done.stderr.split())
    assert "unreadable answers in a row" in message and "Traceback" not in message, done.stderr
    assert committed_items(pg_dsn, schemas[1], TYPICAL) == 0


# --------------------------------------------------------------------------------------------
# Secrets, hostile names, TLS

PASSWORD = "pg-S3cret-Pa55word"  # noqa: S105  (made up: no output may show it)
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzSECRETzz"  # noqa: S105
SESSION_TOKEN = "FwoGZXIvYXdzEJr//////////wEaDSESSIONTOKENzz"  # noqa: S105


def _with_password(dsn: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    info["password"] = PASSWORD
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in info.items()})


def test_secrets_appear_nowhere(
    migrate: Migrator, dynamodb: Any, pg: psycopg.Connection[TupleRow], pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server trusts local connections: the password is ignored by it but present in every URL.
    url = _with_password(pg_dsn)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    create_table(dynamodb, "orders", [("id", "S")])
    dynamodb.update_table(
        TableName="orders", StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    )
    put_items(dynamodb, "orders", [{"id": {"S": f"o{i}"}, "bad": {"S": "nul\x00"}} for i in range(3)])
    put_items(dynamodb, "orders", [{"id": {"S": f"p{i}"}, "pad": {"S": "x" * 2000}} for i in range(500)])
    common = ("--endpoint-url", migrate.endpoint, "--region", REGION, "--state-schema", migrate.state)
    runs = [
        migrate("--follow", "--exit-when-idle", "1", "--progress", "--progress-every", "0.05", url=url),
        migrate("--follow", "--exit-when-idle", "1", url=url, root_args=("--verbose",)),
        migrate(url=url, root_args=("--log-format", "json")),
        migrate(url=url.replace("127.0.0.1", "127.0.0.2"), root_args=("--verbose",)),  # a failure, with traceback
    ]
    outputs = [r.stdout + r.stderr for r in runs]
    for args in (["status", "--json"], ["status"], ["verify"]):
        done = subprocess.run(
            [PODYN, *args, "--postgres-url", url, *(common if args[0] == "verify" else common[-2:])],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        outputs.append(done.stdout + done.stderr)
    assert any("orders" in o for o in outputs)
    for secret in (PASSWORD, SECRET_KEY, SESSION_TOKEN):
        leaks = [o for o in outputs if secret in o]
        assert not leaks, f"{secret[:6]}… printed:\n{leaks[0]}"
    # Nor in any state table.
    for (table,) in pg.execute(
        "SELECT quote_ident(table_name) FROM information_schema.tables WHERE table_schema = %s", [migrate.state]
    ).fetchall():
        dump = pg.execute(
            sql.SQL("SELECT coalesce(string_agg(t::text, ''), '') FROM {}.{} t").format(
                sql.Identifier(migrate.state), sql.SQL(table)
            )
        ).fetchone()
        assert dump is not None
        for secret in (PASSWORD, SECRET_KEY, SESSION_TOKEN):
            assert secret not in str(dump[0]), table


HOSTILE = ['x"; DROP TABLE canary; --', "Robert'); DROP TABLE canary;--", "a.b", "$1", "sp ace", "表"]


def test_hostile_names_cannot_run_sql(migrate: Migrator, dynamodb: Any, pg: psycopg.Connection[TupleRow]) -> None:
    pg.execute(sql.SQL("CREATE TABLE {} (x int)").format(sql.Identifier(migrate.target, "canary")))
    table = 'orders"; DROP TABLE canary; --'
    create_table(dynamodb, table, [(HOSTILE[0], "S")])
    put_items(dynamodb, table, [{HOSTILE[0]: {"S": f"k{i}"}} | {n: {"S": n} for n in HOSTILE[1:]} for i in range(5)])
    assert_ok(migrate("-t", table))
    assert pg.execute("SELECT to_regclass(%s)", [f"{migrate.target}.canary"]).fetchone() != (None,)
    columns = {
        r[0]
        for r in pg.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
            [migrate.target, table],
        )
    }
    assert columns == set(HOSTILE)
    rows = pg.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(migrate.target, table))).fetchone()
    assert rows == (5,)


def test_tls_settings_reach_libpq(migrate: Migrator, pg_dsn: str) -> None:
    # The test server has no TLS: libpq refusing to go on without it shows the settings reached it.
    info = psycopg.conninfo.conninfo_to_dict(pg_dsn)
    info.update(sslmode="require")
    run = migrate("-t", "x", url=psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in info.items()}))
    assert run.returncode == 1
    assert "SSL" in run.text, run
    jdbc = f"jdbc:postgresql://127.0.0.1:{info['port']}/{info['dbname']}?user={info['user']}&sslmode=verify-full"
    run = migrate("-t", "x", url=jdbc + "&sslrootcert=/nonexistent/root.crt")
    assert run.returncode == 1
    assert "SSL" in run.text or "root.crt" in run.text, run


# --------------------------------------------------------------------------------------------
# Memory


def _worker_peak_mib(dsn: str, server: ScanServer, table: str, schemas: tuple[str, str]) -> float:
    # Transactions of 4 MB: a segment of the smaller table (11 MB) holds several too, so both loads
    # reach the same most a transaction holds (with 16 MB, only the larger one's did: 1.15x).
    cmd = migrate_cmd(
        dsn, server.endpoint, schemas, "--table", table, "--workers", "2", "--segments", "8", "--batch-mb", "4"
    )
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    with PeakRss(proc.pid) as rss:
        _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    assert rss.children_peak_kib > 0
    return rss.children_peak_kib / 1024


def test_worker_memory_does_not_grow_with_the_table(pg_dsn: str, fast_dynamo: ScanServer) -> None:
    peaks = []
    for n, items in enumerate((200_000, 800_000)):
        name = f"mem{n}"
        fast_dynamo.add_table(TableSpec(name, TYPICAL_KEYS, typical_item, items))
        fast_dynamo.warm(name)
        schemas = (f"mem_{uuid.uuid4().hex[:8]}", f"mem_{uuid.uuid4().hex[:8]}_state")
        try:
            peaks.append(_worker_peak_mib(pg_dsn, fast_dynamo, name, schemas))
            assert committed_items(pg_dsn, schemas[1], name) == items
        finally:
            fast_dynamo.remove_table(name)  # its cached items are hundreds of MB
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                for s in schemas:
                    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(s)))
    assert peaks[1] <= peaks[0] * 1.2, peaks


@pytest.mark.parametrize(("signum", "workers"), [(signal.SIGTERM, "2"), (signal.SIGINT, "2"), (signal.SIGTERM, "1")])
def test_a_signal_stops_migrate_cleanly_and_the_rerun_finishes(
    pg_dsn: str, fast_dynamo: ScanServer, schemas: tuple[str, str], signum: int, workers: str
) -> None:
    # Before: SIGTERM killed migrate without a word (leaked-semaphore warnings), Ctrl-C exited 130
    # with no message.
    fast_dynamo.stall(60, after_pages=6)  # mid-load, for as long as the test needs
    cmd = migrate_cmd(pg_dsn, fast_dynamo.endpoint, schemas, "--table", TYPICAL, "--batch-mb", "1")
    cmd += ["--segments", "8", "--workers", workers]
    with running(cmd) as proc:
        proc.wait_for(lambda: committed_items(pg_dsn, schemas[1], TYPICAL) > 0, "the first rows committed")
        proc.proc.send_signal(signum)
        assert proc.finish(timeout=60) == 128 + signum, proc.stderr()
        stderr = proc.stderr()
    name = signal.Signals(signum).name
    assert f"stopped by {name}" in stderr and "run the same command again to resume" in stderr, stderr
    assert "Traceback" not in stderr and "leaked" not in stderr, stderr
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # stopping is not recorded as an error
        found = conn.execute(sql.SQL("SELECT last_error FROM {}").format(sql.Identifier(schemas[1], "tables")))
        assert found.fetchone() == (None,)
    fast_dynamo.reset_faults()
    with running(cmd) as rerun:
        assert rerun.finish(timeout=240) == 0, rerun.stderr()
    _exact(pg_dsn, schemas, TYPICAL, TYPICAL_COUNT)


def test_migrate_follow_stops_at_once_when_its_follower_cannot_go_on(
    pg_dsn: str, fast_dynamo: ScanServer, schemas: tuple[str, str]
) -> None:
    # Before: the follower thread ended (here: the table has no stream) and the load went on for
    # as long as it took, capturing nothing, the error shown only at the end.
    fast_dynamo.stall(120, after_pages=6)
    cmd = migrate_cmd(pg_dsn, fast_dynamo.endpoint, schemas, "--table", TYPICAL, "--batch-mb", "1", "--follow")
    started = time.monotonic()
    with running(cmd) as proc:
        assert proc.finish(timeout=90) == 1, proc.stderr()
        message = " ".join(proc.stderr().split())
    assert time.monotonic() - started < 90
    assert "has no stream" in message and "Traceback" not in message, message
    assert committed_items(pg_dsn, schemas[1], TYPICAL) < TYPICAL_COUNT
