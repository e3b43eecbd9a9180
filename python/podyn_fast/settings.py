"""One frozen settings type per command: the CLI builds them from its options, and worker processes
receive them (pickled)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["columns", "jsonb"]


def postgres_url(given: str | None) -> str | None:
    """The PostgreSQL URL from the option or the environment (``PODYN_POSTGRES_URL``, then
    ``DATABASE_URL``); a JDBC URL (``jdbc:postgresql://…``, as Podyn took) becomes a libpq one,
    whose query parameters (user, password, sslmode, sslrootcert, …) libpq reads as they are."""
    url = given or os.environ.get("PODYN_POSTGRES_URL") or os.environ.get("DATABASE_URL")
    if url and url.startswith("jdbc:"):
        url = url[len("jdbc:") :]
    return url or None


@dataclass(frozen=True)
class AwsConfig:
    """Where and as whom to reach DynamoDB; credentials come from the standard chain."""

    region: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    max_attempts: int = 10
    """botocore's attempts per call before our own retries take over (``AWS_MAX_ATTEMPTS``)."""
    s3_endpoint_url: str | None = None
    """S3's endpoint for exports (a local S3); None: botocore's own (``AWS_ENDPOINT_URL_S3``, AWS)."""


@dataclass(frozen=True)
class MigrateConfig:
    """Everything `migrate` needs; pickled to every worker process."""

    postgres_url: str
    aws: AwsConfig = field(default_factory=AwsConfig)
    tables: tuple[str, ...] = ()
    """DynamoDB tables to load; empty means every table (ListTables)."""
    segments: int | None = None
    """TotalSegments of the parallel scan; None chooses from the table size. Fixed at a table's first run."""
    workers: int = 2
    """Loader processes; each scans one segment at a time and holds one PostgreSQL connection."""
    scan_rate: float | None = None
    """Read capacity units per second per table, shared by every worker and host; None is unthrottled."""
    consistent_read: bool = False
    mode: Mode = "columns"
    lower_case: bool = False
    target_schema: str = "public"
    state_schema: str = "podyn"
    column_limit: int = 1500
    """Columns per table before further attributes go to the overflow jsonb column (PostgreSQL allows 1600)."""
    defer_primary_key: bool | None = None
    """Build the primary key after the load (True), during it (False), or by the table's size (None:
    after, for a table this run loads that is larger than the server's shared_buffers)."""
    commit_bytes: int = 16 << 20
    """Rows per transaction, in bytes of COPY data: large transactions load fastest (docs/postgres.md)."""
    commit_seconds: float = 5.0
    """Commit at least this often, so progress and leases stay fresh on slow reads."""
    lease_seconds: float = 60.0
    """A segment whose holder has not checkpointed for this long can be taken over."""
    progress: bool = True
    progress_every: float = 10.0
    """Seconds between progress lines when the output is not a terminal (bars are live)."""
    json_logs: bool = False
    """Workers log JSON lines too (``--log-format json``)."""
    load: bool = True
    """False creates the tables and records them, loading nothing (Podyn's -s alone)."""
    citus: bool = False
    """Distribute each table by its partition key, right after creating it (Citus)."""
    export: str | None = None
    """The export folder (s3://BUCKET/PREFIX/AWSDynamoDB/EXPORT_ID) to load instead of a Scan."""
    export_to: str | None = None
    """Ask DynamoDB for an export to this S3 location (s3://BUCKET[/PREFIX]), wait for it, load it."""
    export_time: float | None = None
    """The export's point in time (seconds since the epoch); None: now."""
    follow: bool = False
    """A follower captures the changes (``--follow``): its stream must hold all of them."""


@dataclass(frozen=True)
class FollowConfig:
    """Everything `follow` needs."""

    postgres_url: str
    aws: AwsConfig = field(default_factory=AwsConfig)
    tables: tuple[str, ...] = ()
    """Tables to follow; empty means every table in the state schema."""
    state_schema: str = "podyn"
    column_limit: int = 1500
    exit_when_idle: float | None = None
    """Exit once every shard is finished or has returned nothing new for this many seconds."""


@dataclass(frozen=True)
class VerifyConfig:
    """Everything `verify` needs."""

    postgres_url: str
    aws: AwsConfig = field(default_factory=AwsConfig)
    tables: tuple[str, ...] = ()
    state_schema: str = "podyn"
    sample: int | None = None
    """Compare only about this many items (whole pages, from every segment); extra keys are not sought."""
    threads: int = 4
    scan_rate: float | None = None
    consistent_read: bool = False
