"""The `podyn-fast` command line: options become settings, settings go to the library, its outcome
becomes an exit code.

The library is imported inside each command, not here: `--help` and `--version` then need neither
botocore nor psycopg, which cost most of the start-up time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Annotated

import typer

from podyn_fast import __version__, report
from podyn_fast.errors import ExportError, Interrupted, PodynError
from podyn_fast.settings import AwsConfig, FollowConfig, MigrateConfig, VerifyConfig, postgres_url

log = logging.getLogger("podyn_fast")

app = typer.Typer(
    name="podyn-fast",
    help="Move DynamoDB tables into PostgreSQL (or Citus) fast, and keep them in sync until cutover.",
    no_args_is_help=True,
    add_completion=False,
)

# Help panels, so that a long option list reads by concern.
SOURCE, TARGET, LOAD, PODYN = "DynamoDB (the source)", "PostgreSQL (the target)", "Loading", "Podyn's steps"

# Every numeric option is checked as it is parsed, before anything is written anywhere: a value out
# of range is refused with one line saying what is allowed (exit code 2).
MAX_SEGMENTS = 1_000_000  # DynamoDB's limit on TotalSegments
MAX_WORKERS = 1024
MIN_COLUMNS, MAX_COLUMNS = 3, 1600  # the keys and the overflow column at least; PostgreSQL's limit
MAX_BATCH_MB = 1024.0
MAX_ATTEMPTS = 50  # AWS_MAX_ATTEMPTS: botocore's attempts per call
MIN_LEASE, MAX_LEASE = 4.0, 3600.0  # seconds; renewed every quarter of it

# Options shared by the commands, declared once.
PostgresUrl = Annotated[
    str | None,
    typer.Option(
        "--postgres-url",
        "-u",
        "--postgres-jdbc-url",
        help="PostgreSQL URL (libpq or jdbc:postgresql://); else PODYN_POSTGRES_URL or DATABASE_URL.",
        show_default=False,
        rich_help_panel=TARGET,
    ),
]
StateSchema = Annotated[str, typer.Option(help="PostgreSQL schema of podyn-fast's own state.", rich_help_panel=TARGET)]
ColumnLimit = Annotated[
    int,
    typer.Option(
        min=MIN_COLUMNS,
        max=MAX_COLUMNS,
        help="Columns per table before further attributes go to an overflow jsonb column (PostgreSQL allows 1600).",
        rich_help_panel=TARGET,
    ),
]


def _positive(value: float | None) -> float | None:
    """A rate, a size or a period: any number above 0."""
    if value is not None and not value > 0:  # NaN too
        raise typer.BadParameter(f"{value:g} is not above 0.")
    return value


Region = Annotated[
    str | None, typer.Option(help="AWS region; default from the AWS configuration.", rich_help_panel=SOURCE)
]
EndpointUrl = Annotated[str | None, typer.Option(help="DynamoDB endpoint (a local emulator).", rich_help_panel=SOURCE)]
Profile = Annotated[str | None, typer.Option(help="AWS profile.", rich_help_panel=SOURCE)]


class _Settings:
    """The root options, for every command."""

    verbose = False
    json_logs = False


def _reporter() -> report.Reporter:
    return report.Reporter(json_logs=_Settings.json_logs, verbose=_Settings.verbose)


def _setup(postgres: str | None) -> tuple[report.Reporter, str]:
    """The reporter, and the PostgreSQL URL (or exit 2 without one)."""
    out = _reporter()
    url = postgres_url(postgres)
    if url is None:
        out.error("no PostgreSQL URL: pass --postgres-url or set PODYN_POSTGRES_URL or DATABASE_URL")
        raise typer.Exit(2)
    return out, url


def _aws(region: str | None, endpoint_url: str | None, profile: str | None) -> AwsConfig:
    """Where DynamoDB is, with what the AWS tools' own environment says (or exit 2 on a bad value).
    The region: --region, else ``AWS_REGION`` (what the AWS SDKs and Podyn's Java SDK read; botocore
    reads only ``AWS_DEFAULT_REGION``), else botocore's own (``AWS_DEFAULT_REGION``, the profile)."""
    region = region or os.environ.get("AWS_REGION", "").strip() or None
    attempts = os.environ.get("AWS_MAX_ATTEMPTS", "").strip()
    if not attempts:
        return AwsConfig(region=region, endpoint_url=endpoint_url, profile=profile)
    if not attempts.isdigit() or not 1 <= int(attempts) <= MAX_ATTEMPTS:
        _reporter().error(f"AWS_MAX_ATTEMPTS must be a whole number from 1 to {MAX_ATTEMPTS}, not {attempts!r}")
        raise typer.Exit(2)
    return AwsConfig(region=region, endpoint_url=endpoint_url, profile=profile, max_attempts=int(attempts))


def _interrupted(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def _reported(out: report.Reporter, url: str | None) -> Iterator[None]:
    """Errors become one line naming the problem and the fix, and exit code 1 (with --verbose,
    the traceback too); no message ever shows the password or an AWS secret. Ctrl-C and SIGTERM
    stop the command (a follower first finishes its batch): exit code 128 + the signal."""
    previous = signal.signal(signal.SIGTERM, _interrupted)
    try:
        yield
    except typer.Exit:
        raise
    except (KeyboardInterrupt, Interrupted) as e:
        signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
        out.error(
            f"stopped by {signal.Signals(signum).name}: what was committed stays (`podyn-fast status` shows it); "
            f"run the same command again to resume"
        )
        raise typer.Exit(128 + signum) from None
    except Exception as e:
        from podyn_fast import explain  # noqa: PLC0415  (botocore and psycopg: not for --help)
        from podyn_fast.secrets import clean  # noqa: PLC0415

        if _Settings.verbose:
            out.traceback(clean("".join(traceback.format_exception(e)), url))
        out.error(explain.message(e, url))
        raise typer.Exit(1) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"podyn-fast {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging, and tracebacks on errors.")] = False,
    log_format: Annotated[
        str, typer.Option(help="text, or json: one JSON object per line on stderr, and no progress bars.")
    ] = "text",
) -> None:
    """Move DynamoDB tables into PostgreSQL (or Citus) fast, and keep them in sync until cutover."""
    if log_format not in ("text", "json"):
        raise typer.BadParameter("--log-format must be text or json")
    _Settings.verbose = verbose
    _Settings.json_logs = log_format == "json"


def _tables(values: list[str] | None) -> tuple[str, ...]:
    # Podyn took "-t a,b"; repeated options work too.
    return tuple(t.strip() for v in values or [] for t in v.split(",") if t.strip())


@app.command()
def migrate(
    postgres: PostgresUrl = None,
    table: Annotated[
        list[str] | None,
        typer.Option("--table", "-t", help="DynamoDB table (repeat, or a,b); default: all.", rich_help_panel=SOURCE),
    ] = None,
    segments: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=MAX_SEGMENTS,
            help="Parallel scan segments per table (fixed at a table's first run); default from its size.",
            rich_help_panel=SOURCE,
        ),
    ] = None,
    export: Annotated[
        str | None,
        typer.Option(
            help="Load this DynamoDB export in S3 (s3://BUCKET/PREFIX/AWSDynamoDB/EXPORT_ID, DYNAMODB_JSON) "
            "instead of a Scan: no read capacity used, a data file per segment.",
            rich_help_panel=SOURCE,
        ),
    ] = None,
    export_to: Annotated[
        str | None,
        typer.Option(
            help="Ask DynamoDB for an export of --table to s3://BUCKET/PREFIX (point-in-time recovery needed), "
            "wait for it, then load it as --export does; the same command again waits for the same export.",
            rich_help_panel=SOURCE,
        ),
    ] = None,
    export_time: Annotated[
        str | None,
        typer.Option(
            help="The point in time of --export-to (ISO 8601, UTC unless it says); default now.", rich_help_panel=SOURCE
        ),
    ] = None,
    s3_endpoint_url: Annotated[
        str | None,
        typer.Option(help="S3 endpoint for --export (a local S3); else AWS_ENDPOINT_URL_S3.", rich_help_panel=SOURCE),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1, max=MAX_WORKERS, help="Loader processes, each with one PostgreSQL connection.", rich_help_panel=LOAD
        ),
    ] = 2,
    pg_connections: Annotated[
        int | None,
        typer.Option(
            "--pg-connections",
            "-n",
            "--num-connections",
            min=1,
            max=MAX_WORKERS,
            help="At most this many PostgreSQL connections (caps --workers).",
            rich_help_panel=LOAD,
        ),
    ] = None,
    scan_rate: Annotated[
        float | None,
        typer.Option(
            "--scan-rate",
            "-r",
            callback=_positive,
            help="Read capacity units per second per table, for all workers and hosts.",
            rich_help_panel=SOURCE,
        ),
    ] = None,
    consistent_read: Annotated[
        bool, typer.Option(help="Strongly consistent reads (twice the capacity).", rich_help_panel=SOURCE)
    ] = False,
    mode: Annotated[
        str,
        typer.Option(
            "--conversion-mode",
            "-m",
            help="columns: a column per attribute; jsonb: keys + data jsonb.",
            rich_help_panel=TARGET,
        ),
    ] = "columns",
    lower_case: Annotated[
        bool, typer.Option("--lower-case-column-names", "-lc", help="Lower-case column names.", rich_help_panel=TARGET)
    ] = False,
    target_schema: Annotated[
        str, typer.Option(help="PostgreSQL schema of the tables.", rich_help_panel=TARGET)
    ] = "public",
    state_schema: StateSchema = "podyn",
    defer_primary_key: Annotated[
        bool | None,
        typer.Option(
            "--defer-primary-key/--no-defer-primary-key",
            help="Build the primary key after the load, or during it; by default after, for a table larger than "
            "PostgreSQL's shared_buffers (decided at the table's first run).",
            rich_help_panel=TARGET,
        ),
    ] = None,
    column_limit: ColumnLimit = 1500,
    batch_mb: Annotated[
        float,
        typer.Option(
            callback=_positive,
            max=MAX_BATCH_MB,
            help="MB of rows per transaction (each commits the segment's position with its rows).",
            rich_help_panel=LOAD,
        ),
    ] = 16.0,
    lease_seconds: Annotated[
        float,
        typer.Option(
            min=MIN_LEASE,
            max=MAX_LEASE,
            help="Seconds a worker's lease on a segment lasts without renewal: how soon another migrate takes "
            "over the segments of one that died on another host (renewed every quarter of it while it works).",
            rich_help_panel=LOAD,
        ),
    ] = 60.0,
    region: Region = None,
    endpoint_url: EndpointUrl = None,
    profile: Profile = None,
    progress: Annotated[
        bool, typer.Option(help="Show progress (bars on a terminal, else lines).", rich_help_panel=LOAD)
    ] = True,
    progress_every: Annotated[
        float,
        typer.Option(
            callback=_positive,
            help="Seconds between progress lines when not on a terminal (and JSON records).",
            rich_help_panel=LOAD,
        ),
    ] = 10.0,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            help="Capture stream changes from the start of the load, then keep applying them.",
            rich_help_panel=LOAD,
        ),
    ] = False,
    exit_when_idle: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="With --follow: exit once every shard has been idle this many seconds.",
            rich_help_panel=LOAD,
        ),
    ] = None,
    citus: Annotated[
        bool,
        typer.Option(
            "--citus", "-x", help="Distribute each table by its partition key (Citus).", rich_help_panel=TARGET
        ),
    ] = False,
    only_schema: Annotated[
        bool,
        typer.Option(
            "--schema", "-s", help="Podyn's -s: create the tables (alone: nothing else).", rich_help_panel=PODYN
        ),
    ] = False,
    data: Annotated[
        bool, typer.Option("--data", "-d", help="Podyn's -d: load the data.", rich_help_panel=PODYN)
    ] = False,
    changes: Annotated[
        bool, typer.Option("--changes", "-c", help="Podyn's -c: then apply changes (--follow).", rich_help_panel=PODYN)
    ] = False,
) -> None:
    """Create the tables in PostgreSQL and bulk-load them by parallel scan, resumably.

    Run the same command again after any interruption: it continues where the last run committed.
    With no PostgreSQL URL it prints the SQL instead (a dry run): a script for psql.
    """
    out = _reporter()
    url = postgres_url(postgres)
    # Podyn's -s/-d/-c choose the steps; without any of them migrate creates and loads.
    if changes and not data:
        out.error(
            "-c/--changes without -d/--data would apply changes to tables never loaded: add -d "
            "(or run `podyn-fast follow` on tables migrated earlier)"
        )
        raise typer.Exit(2)
    follow = follow or changes
    load = data or not only_schema
    if mode not in ("columns", "jsonb"):
        out.error(f"--conversion-mode must be columns or jsonb, not {mode!r}")
        raise typer.Exit(2)
    if url is None and follow:
        out.error("--follow needs a PostgreSQL URL: pass --postgres-url or set PODYN_POSTGRES_URL")
        raise typer.Exit(2)
    if export is not None or export_to is not None:
        _check_export(out, export, export_to, url, segments=segments, tables=_tables(table), load=load)
    when = _export_time(out, export_time, export_to)
    if pg_connections is not None:
        workers = min(workers, pg_connections)
    cfg = MigrateConfig(
        postgres_url=url or "",  # the dry run connects to nothing
        aws=dataclasses.replace(_aws(region, endpoint_url, profile), s3_endpoint_url=s3_endpoint_url),
        tables=_tables(table),
        export=export,
        export_to=export_to,
        export_time=when,
        follow=follow,
        segments=segments,
        workers=workers,
        scan_rate=scan_rate,
        consistent_read=consistent_read,
        mode="jsonb" if mode == "jsonb" else "columns",
        lower_case=lower_case,
        target_schema=target_schema,
        state_schema=state_schema,
        column_limit=column_limit,
        defer_primary_key=defer_primary_key,
        commit_bytes=max(1, int(batch_mb * 1e6)),
        lease_seconds=lease_seconds,
        progress=progress and not _Settings.json_logs,
        json_logs=_Settings.json_logs,
        progress_every=progress_every,
        load=load,
        citus=citus,
    )
    if url is None:
        _dry_run(out, cfg)
        return
    from podyn_fast.follow.thread import FollowerThread  # noqa: PLC0415  (see the module docstring)
    from podyn_fast.migrate import coordinator  # noqa: PLC0415

    if not load:
        with _reported(out, url):
            reports = coordinator.run(cfg, out.console)
        names = ", ".join(r.name for r in reports)
        out.say(f"created {len(reports)} table(s) in {target_schema}: {names}; -d/--data loads them")
        return
    follower: FollowerThread | None = None
    if follow:
        fcfg = FollowConfig(
            postgres_url=url,
            aws=cfg.aws,
            state_schema=state_schema,
            column_limit=column_limit,
            exit_when_idle=exit_when_idle,
        )
        follower = FollowerThread(fcfg, out)
    with _reported(out, url):
        # Capturing the changes is half the point: a follower that stops stops the load too.
        reports = coordinator.run(
            cfg,
            out.console,
            on_planned=follower.start if follower else None,
            failed=follower.failure if follower else lambda: None,
        )
        if follower is not None:
            report.migrate_summary(out, reports)
            follower.wait()
    if follower is None:
        report.migrate_summary(out, reports)
    rejects = sum(r.rejects for r in reports) + (follower.rejects if follower is not None else 0)
    report.rejects_line(out, rejects, state_schema)
    if not all(r.loaded for r in reports):
        out.say(
            "not every segment is loaded: the rest are held by other migrate processes (or by ones that "
            "died on another host, whose leases run out after a minute); run the same command again to finish"
        )
    if rejects or not all(r.loaded for r in reports) or (follower is not None and follower.failed):
        raise typer.Exit(1)


def _check_export(
    out: report.Reporter,
    export: str | None,
    export_to: str | None,
    url: str | None,
    *,
    segments: int | None,
    tables: tuple[str, ...],
    load: bool,
) -> None:
    """--export, --export-to and what they cannot go with, refused before anything is read or written."""
    from podyn_fast.dynamo.exports import ExportLocation, ExportTarget  # noqa: PLC0415  (see the module docstring)

    option = "--export" if export is not None else "--export-to"
    try:
        if export is not None:
            ExportLocation.parse(export)
        if export_to is not None:
            ExportTarget.parse(export_to)
    except ExportError as e:
        out.error(f"{option}: {e}")
        raise typer.Exit(2) from None
    for refused, why in (
        (
            export is not None and export_to is not None,
            "and --export-to: give one (an export to load, or one to ask for)",
        ),
        (
            export_to is not None and url is None,
            "needs a PostgreSQL URL: a dry run asks DynamoDB for no export (--export prints one that exists)",
        ),
        (export_to is not None and not load, "asks for an export to load, and -s alone loads nothing: drop it"),
        (segments is not None, "takes its segments from the export's data files: drop --segments"),
        (export_to is not None and len(tables) != 1, "exports one table: name it with --table"),
    ):
        if refused:
            out.error(f"{option} {why}")
            raise typer.Exit(2)


def _export_time(out: report.Reporter, text: str | None, export_to: str | None) -> float | None:
    """--export-time as seconds since the epoch (UTC unless it names its zone), or exit 2."""
    if text is None:
        return None
    if export_to is None:
        out.error("--export-time goes with --export-to")
        raise typer.Exit(2)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        out.error(f"--export-time: {text!r} is not an ISO 8601 time (like 2026-12-01T18:30:00Z)")
        raise typer.Exit(2) from None
    seconds = (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()
    if seconds > time.time():
        out.error(f"--export-time: {text} is in the future")
        raise typer.Exit(2)
    return seconds


def _dry_run(out: report.Reporter, cfg: MigrateConfig) -> None:
    from podyn_fast.migrate import dryrun  # noqa: PLC0415  (see the module docstring)

    out.say(
        "no PostgreSQL URL: printing the SQL instead (a dry run; pipe it into psql, or pass --postgres-url to load)"
    )
    with _reported(out, None):
        reports = dryrun.run(cfg, sys.stdout.buffer)
    sys.stdout.flush()
    for r in reports:
        text = f"{r.name}: {r.items:,} items in {r.pages:,} COPY blocks, {r.rejects:,} left out"
        out.say(text, **dataclasses.asdict(r))
    if any(r.rejects for r in reports):
        raise typer.Exit(1)


@app.command()
def follow(
    postgres: PostgresUrl = None,
    table: Annotated[
        list[str] | None, typer.Option("--table", "-t", help="Table to follow (repeat, or a,b); default: all migrated.")
    ] = None,
    exit_when_idle: Annotated[
        float | None,
        typer.Option(min=0.0, help="Exit once every shard has been read to its end or idle this many seconds."),
    ] = None,
    state_schema: StateSchema = "podyn",
    column_limit: ColumnLimit = 1500,
    region: Region = None,
    endpoint_url: EndpointUrl = None,
    profile: Profile = None,
) -> None:
    """Apply DynamoDB Streams changes to the migrated tables, exactly once, until stopped.

    SIGTERM or Ctrl-C finishes the batch in flight, commits and exits 0.
    """
    out, url = _setup(postgres)
    cfg = FollowConfig(
        postgres_url=url,
        aws=_aws(region, endpoint_url, profile),
        tables=_tables(table),
        state_schema=state_schema,
        column_limit=column_limit,
        exit_when_idle=exit_when_idle,
    )
    from podyn_fast.follow.thread import FollowerThread  # noqa: PLC0415  (see the module docstring)

    follower = FollowerThread(cfg, out)
    with _reported(out, url):
        follower.start()
        follower.wait()
    report.rejects_line(out, follower.rejects, state_schema)
    if follower.failed:
        raise typer.Exit(1)


@app.command()
def status(
    postgres: PostgresUrl = None,
    table: Annotated[
        list[str] | None, typer.Option("--table", "-t", help="Table (repeat, or a,b); default: all.")
    ] = None,
    state_schema: StateSchema = "podyn",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout, for scripts.")] = False,
) -> None:
    """Where each table stands: phase, segments, items, rejects, shards, the follower's lag, the last error."""
    out, url = _setup(postgres)
    from podyn_fast.postgres import connect  # noqa: PLC0415  (see the module docstring)
    from podyn_fast.state import status as state_status  # noqa: PLC0415

    with _reported(out, url), connect.connect(url, "podyn-fast status") as conn:
        tables = state_status.read(conn, state_schema, _tables(table))
    if as_json:
        typer.echo(json.dumps(report.status_json(tables), indent=2))
    else:
        report.status_table(tables)


@app.command()
def verify(
    postgres: PostgresUrl = None,
    table: Annotated[
        list[str] | None, typer.Option("--table", "-t", help="Table (repeat, or a,b); default: all migrated.")
    ] = None,
    sample: Annotated[
        int | None,
        typer.Option(min=1, help="Compare about this many items per table (extra target rows not sought)."),
    ] = None,
    threads: Annotated[int, typer.Option(min=1, max=MAX_WORKERS, help="Segments read at once.")] = 4,
    scan_rate: Annotated[
        float | None,
        typer.Option("--scan-rate", "-r", callback=_positive, help="Read capacity units per second per table."),
    ] = None,
    consistent_read: Annotated[bool, typer.Option(help="Strongly consistent reads (twice the capacity).")] = False,
    state_schema: StateSchema = "podyn",
    region: Region = None,
    endpoint_url: EndpointUrl = None,
    profile: Profile = None,
) -> None:
    """Read the source again and compare it with PostgreSQL: counts, missing, extra and differing rows.

    Exit code 0 only when every table is equal. Stop writes to the source (or let follow catch up)
    first: changes in flight show as differences.
    """
    out, url = _setup(postgres)
    cfg = VerifyConfig(
        postgres_url=url,
        aws=_aws(region, endpoint_url, profile),
        tables=_tables(table),
        state_schema=state_schema,
        sample=sample,
        threads=threads,
        scan_rate=scan_rate,
        consistent_read=consistent_read,
    )
    from podyn_fast import verify as verify_  # noqa: PLC0415  (see the module docstring)

    with _reported(out, url):
        verdicts = verify_.run(cfg)
    for line in report.verify_lines(verdicts):
        typer.echo(line)
    if not all(v.equal for v in verdicts):
        raise typer.Exit(1)


@app.command()
def demo(
    wait: Annotated[
        bool | None,
        typer.Option(
            "--wait/--no-wait", help="Keep running after the show, until Ctrl-C (default: when on a terminal)."
        ),
    ] = None,
) -> None:
    """Migrate and follow the DynamoDB Developer Guide's sample tables, from a local emulator into an
    embedded PostgreSQL: nothing to configure, no AWS account."""
    from podyn_fast.demo import run  # noqa: PLC0415  (its imports are needed by no other command)

    out = _reporter()
    try:
        run.run(out.console, wait=sys.stdin.isatty() if wait is None else wait)
    except (PodynError, RuntimeError) as e:  # the emulator's and the embedded server's errors too
        out.error(str(e))
        raise typer.Exit(1) from None


def main() -> None:
    app()
