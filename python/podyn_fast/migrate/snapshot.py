"""Where a table's snapshot comes from: a parallel Scan, or a DynamoDB export in S3 (``--export``,
or one asked for first with ``--export-to``), checked against the command line, and with
``--follow`` against the stream that must hold every change the export lacks."""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timezone

from rich.console import Console

from podyn_fast.dynamo import exports
from podyn_fast.dynamo.client import RawDynamo, s3_client
from podyn_fast.dynamo.tables import SourceTable, describe
from podyn_fast.errors import MigrateError
from podyn_fast.follow.follower import RETENTION_MARGIN, STREAM_RETENTION
from podyn_fast.settings import MigrateConfig

# An export holds every write made a minute before its time and none made a minute after it.
EXPORT_FUZZ = 60.0


def resolve(cfg: MigrateConfig, dynamo: RawDynamo, console: Console) -> tuple[MigrateConfig, exports.Manifest | None]:
    """The export to load instead of a Scan, if any (with ``--export-to``, asked for and waited for
    first), and the settings that name it."""
    if cfg.export_to:
        cfg = dataclasses.replace(cfg, export=_requested_export(cfg, dynamo, console).url)
    return cfg, read_export(cfg, dynamo) if cfg.export else None


def from_export(cfg: MigrateConfig, source: SourceTable, export: exports.Manifest) -> SourceTable:
    """``source`` loaded from ``export``: its rows, and (with --follow) a stream that covers the rest."""
    if cfg.follow:
        _check_stream_covers(export, source)
    return dataclasses.replace(source, export=export, item_count=export.item_count)


def _requested_export(cfg: MigrateConfig, dynamo: RawDynamo, console: Console) -> exports.ExportLocation:
    """``--export-to``: ask for the export of the one table named, and wait until it is written."""
    assert cfg.export_to is not None and len(cfg.tables) == 1
    source = describe(dynamo, cfg.tables[0])
    arn = exports.request(dynamo, source.arn, exports.ExportTarget.parse(cfg.export_to), cfg.export_time)
    console.print(f"{source.name}: export {arn.rsplit('/', 1)[-1]} requested; waiting for DynamoDB to write it")
    told: list[tuple[str, float]] = [("", 0.0)]

    def said(status: str, seconds: float) -> None:
        # A line when the status changes, and every few progress periods while it does not.
        if status != told[-1][0] or seconds - told[-1][1] >= cfg.progress_every * 3:
            console.print(f"{source.name}: export {status.lower().replace('_', ' ')} after {seconds:.0f} s")
            told.append((status, seconds))

    return exports.wait(dynamo, arn, said)


def read_export(cfg: MigrateConfig, dynamo: RawDynamo) -> exports.Manifest:
    """The export to load, checked against the command line before anything is written."""
    assert cfg.export is not None
    manifest = exports.read_manifest(s3_client(cfg.aws), exports.ExportLocation.parse(cfg.export))
    name, region = manifest.table_name, dynamo.client.meta.region_name
    if cfg.tables and list(cfg.tables) != [name]:
        raise MigrateError(f"{cfg.export} is an export of table {name!r}, not of {', '.join(cfg.tables)}: drop --table")
    if manifest.region != region:
        raise MigrateError(
            f"{cfg.export} is an export of {name!r} in region {manifest.region}; this run is in {region}: "
            f"pass --region {manifest.region}"
        )
    return manifest


def _check_stream_covers(export: exports.Manifest, source: SourceTable) -> None:
    """The table's stream must hold every change the export may lack: from a minute before the
    export time (writes in the minute around it may or may not be in it) until now."""
    name, since = source.name, export.export_time - EXPORT_FUZZ
    if source.stream_arn is None:
        raise MigrateError(f"--follow: table {name!r} has no stream to follow; enable one (NEW_AND_OLD_IMAGES)")
    label = source.stream_arn.rsplit("/", 1)[-1]
    try:
        created = datetime.fromisoformat(label).replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        raise MigrateError(f"--follow: cannot tell when the stream {source.stream_arn} was enabled") from None
    if time.time() - since > STREAM_RETENTION - RETENTION_MARGIN:
        raise MigrateError(
            f"--follow: the export of {name!r} is {(time.time() - export.export_time) / 3600:.1f} hours old and a "
            f"stream keeps 24: the changes since it may be gone; export the table again and load that"
        )
    if created > since:
        raise MigrateError(
            f"--follow: the stream of {name!r} was enabled at {label}, after the export's time less a minute: the "
            f"changes in between are in neither; export the table again, or migrate it by Scan with --follow"
        )
