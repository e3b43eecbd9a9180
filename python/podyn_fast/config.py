"""Settings for each concern, frozen and picklable: the CLI builds them, workers receive them."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote

from psycopg.conninfo import conninfo_to_dict, make_conninfo

Mode = Literal["columns", "jsonb"]


def postgres_url(given: str | None) -> str | None:
    """The PostgreSQL URL from the option or the environment (``PODYN_POSTGRES_URL``, then
    ``DATABASE_URL``); a JDBC URL (``jdbc:postgresql://…``, as Podyn took) becomes a libpq one,
    whose query parameters (user, password, sslmode, sslrootcert, …) libpq reads as they are."""
    url = given or os.environ.get("PODYN_POSTGRES_URL") or os.environ.get("DATABASE_URL")
    if url and url.startswith("jdbc:"):
        url = url[len("jdbc:") :]
    return url or None


_URL_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/@:?#]*:([^@/?#]*)@")
_KEYWORD_PASSWORD = re.compile(r"""(?:^|[\s?&])password\s*=\s*('(?:[^'\\]|\\.)*'|[^\s&]*)""")


def secrets_of(url: str) -> list[str]:
    """Every spelling of the password in a connection string (as written, percent-decoded, parsed
    by libpq), longest first, even when libpq cannot parse the rest: error messages quote them."""
    found: set[str] = set()
    for match in (*_URL_PASSWORD.finditer(url), *_KEYWORD_PASSWORD.finditer(url)):
        raw = match.group(1).strip("'")
        found |= {raw, unquote(raw)}
    try:
        parsed = conninfo_to_dict(url).get("password")
    except Exception:  # an unparsable string: the patterns above are all we have
        parsed = None
    if parsed:
        found.add(str(parsed))
    return sorted((s for s in found if s), key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    """``text`` with the connection string shown without its password and the password nowhere."""
    text = text.replace(url, redacted(url))
    for secret in secrets_of(url):
        text = text.replace(secret, "********")
    return text


def redacted(url: str) -> str:
    """The connection string without its password, for messages and progress output."""
    try:
        params = conninfo_to_dict(url)
    except Exception:  # an unparsable URL is shown as nothing rather than leaked
        return "<unparsable connection string>"
    params.pop("password", None)
    return make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})


@dataclass(frozen=True)
class AwsConfig:
    """Where and as whom to reach DynamoDB; credentials come from the standard chain."""

    region: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None


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
    defer_primary_key: bool = False
    commit_bytes: int = 16 << 20
    """Rows per transaction, in bytes of COPY data: large transactions load fastest (postgres-ingest.md)."""
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
