"""DynamoDB exports to S3, written the way DynamoDB writes them, into any S3 (moto's server here).

moto's ExportTableToPointInTime writes one data file and no manifest, so tests write exports with
this instead. The layout under ``<prefix>/AWSDynamoDB/<ExportId>/`` (docs/dynamodb.md, "Exports"):

- ``_started``: empty, written first.
- ``data/<random>.json.gz``: gzip JSON Lines, one ``{"Item": {…}}`` a line; at least one file
  per partition, an empty partition giving an empty file (a gzip stream of no bytes).
- ``manifest-files.json``: JSON Lines, one ``{"itemCount", "md5Checksum", "etag",
  "dataFileS3Key"}`` a data file; ``md5Checksum`` is the base64 MD5 of the object, ``etag`` S3's.
- ``manifest-summary.json``: ``version``, ``exportArn``, ``startTime``, ``endTime``,
  ``tableArn``, ``tableId``, ``exportTime``, ``s3Bucket``, ``s3Prefix``, ``manifestFilesS3Key``,
  ``billedSizeBytes``, ``itemCount``, ``outputFormat``.
- ``manifest-files.checksum`` and ``manifest-summary.checksum``: the MD5 of each manifest, hex.

Items are spread over the files by a hash of their partition key, and each file holds its items
in the order of that hash (as DynamoDB's partitions hold them), never in key order.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson

from tests.servers.protocol import DYNAMO, DynamoError, validation

ACCOUNT = "123456789012"


@dataclass(frozen=True)
class WrittenExport:
    url: str
    """``s3://bucket/prefix/AWSDynamoDB/ExportId``: what `migrate --export` takes."""
    export_arn: str
    data_keys: tuple[str, ...]
    item_count: int


def new_export_id(at: float) -> str:
    """An ExportId as DynamoDB makes them: milliseconds since the epoch, a dash, 8 hex digits."""
    return f"{int(at * 1000):014d}-{secrets.token_hex(4)}"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _key_hash(item: dict[str, Any], key: str) -> int:
    """Where the item's partition key falls in the hashed keyspace."""
    return int.from_bytes(hashlib.md5(orjson.dumps(item[key])).digest()[:8], "big")  # noqa: S324


def write_export(
    s3: Any,
    bucket: str,
    prefix: str,
    table: str,
    items: Sequence[dict[str, Any]],
    *,
    partition_key: str,
    files: int = 4,
    empty_files: int = 1,
    region: str = "us-east-1",
    export_time: float | None = None,
    output_format: str = "DYNAMODB_JSON",
    lines: Sequence[bytes] | None = None,
    export_id: str | None = None,
) -> WrittenExport:
    """Write an export of ``items`` (DynamoDB JSON maps) in ``files`` data files plus
    ``empty_files`` empty ones; ``lines`` replaces the items' lines (a damaged export)."""
    started = time.time()
    export_time = started if export_time is None else export_time
    export_id = export_id or new_export_id(started)
    root = f"{prefix.strip('/')}/AWSDynamoDB/{export_id}" if prefix.strip("/") else f"AWSDynamoDB/{export_id}"
    table_arn = f"arn:aws:dynamodb:{region}:{ACCOUNT}:table/{table}"
    export_arn = f"{table_arn}/export/{export_id}"
    s3.put_object(Bucket=bucket, Key=f"{root}/_started", Body=b"")

    per_file: list[list[bytes]] = [[] for _ in range(files)]
    if lines is None:
        # A file holds a partition's items in the hash order of their partition keys, never in key
        # order (items of one partition key stay together, in the order given).
        hashed = sorted(((_key_hash(item, partition_key), item) for item in items), key=lambda pair: pair[0])
        for h, item in hashed:
            per_file[h % files].append(orjson.dumps({"Item": item}) + b"\n")
    else:
        for i, line in enumerate(lines):
            per_file[i % files].append(line)
    per_file += [[] for _ in range(empty_files)]

    manifest = io.BytesIO()
    data_keys: list[str] = []
    for content in per_file:
        key = f"{root}/data/{secrets.token_hex(13)}.json.gz"
        body = gzip.compress(b"".join(content), mtime=0)
        etag = s3.put_object(Bucket=bucket, Key=key, Body=body)["ETag"].strip('"')
        md5 = base64.b64encode(hashlib.md5(body).digest()).decode("ascii")  # noqa: S324
        entry = {"itemCount": len(content), "md5Checksum": md5, "etag": etag, "dataFileS3Key": key}
        manifest.write(orjson.dumps(entry) + b"\n")
        data_keys.append(key)
    files_key = f"{root}/manifest-files.json"
    _put_with_checksum(s3, bucket, files_key, manifest.getvalue())
    item_count = sum(len(content) for content in per_file)
    summary = {
        "version": "2020-06-30",
        "exportArn": export_arn,
        "startTime": _iso(started),
        "endTime": _iso(time.time()),
        "tableArn": table_arn,
        "tableId": secrets.token_hex(16),
        "exportTime": _iso(export_time),
        "s3Bucket": bucket,
        "s3Prefix": prefix or None,
        "manifestFilesS3Key": files_key,
        "billedSizeBytes": sum(len(line) for content in per_file for line in content),
        "itemCount": item_count,
        "outputFormat": output_format,
    }
    _put_with_checksum(s3, bucket, f"{root}/manifest-summary.json", orjson.dumps(summary))
    return WrittenExport(f"s3://{bucket}/{root}", export_arn, tuple(data_keys), item_count)


def _put_with_checksum(s3: Any, bucket: str, key: str, body: bytes) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    checksum = hashlib.md5(body).hexdigest().encode("ascii")  # noqa: S324
    s3.put_object(Bucket=bucket, Key=key.removesuffix(".json") + ".checksum", Body=checksum)


class ExportService:
    """ExportTableToPointInTime, DescribeExport and ListExports as DynamoDB answers them, plus the
    point-in-time recovery an export needs (UpdateContinuousBackups, DescribeContinuousBackups).

    An export is IN_PROGRESS for ``delay`` seconds (DynamoDB takes minutes), then written into
    ``s3`` (a boto3 client the test sets) with ``write_export`` and COMPLETED, or FAILED with
    S3's error. Its items are the table's when it was asked for. The same ClientToken with the
    same parameters is the same export; with others, ExportConflictException.
    """

    def __init__(self, region: str) -> None:
        self.region = region
        self.s3: Any = None
        self.delay = 0.5
        self.pitr_since: dict[str, float] = {}
        self.exports: dict[str, dict[str, Any]] = {}
        self._tokens: dict[str, tuple[str, tuple[Any, ...]]] = {}

    def enable_pitr(self, table: str, since: float | None = None) -> None:
        self.pitr_since[table] = time.time() if since is None else since

    def describe_backups(self, table: str) -> dict[str, Any]:
        status = "ENABLED" if table in self.pitr_since else "DISABLED"
        pitr: dict[str, Any] = {"PointInTimeRecoveryStatus": status}
        if table in self.pitr_since:
            pitr["EarliestRestorableDateTime"] = self.pitr_since[table]
            pitr["LatestRestorableDateTime"] = time.time()
        return {
            "ContinuousBackupsDescription": {"ContinuousBackupsStatus": status, "PointInTimeRecoveryDescription": pitr}
        }

    def request(
        self, table: str, table_arn: str, req: dict[str, Any], items: list[dict[str, Any]], partition_key: str
    ) -> dict[str, Any]:
        """``req`` (ExportTableToPointInTime's parameters) for ``table``, whose items are ``items``."""
        now = time.time()
        if table not in self.pitr_since:
            raise DynamoError(
                400,
                DYNAMO,
                "PointInTimeRecoveryUnavailableException",
                f"Point in time recovery is not enabled for table '{table}'",
            )
        export_time = float(req.get("ExportTime", now))
        if export_time > now or export_time < self.pitr_since[table]:
            raise validation("ExportTime must be within the point-in-time recovery window of the table")
        if (
            req.get("ExportFormat", "DYNAMODB_JSON") != "DYNAMODB_JSON"
            or req.get("ExportType", "FULL_EXPORT") != "FULL_EXPORT"
        ):
            raise validation("The podyn-fast test server exports DYNAMODB_JSON full exports only")
        bucket, prefix = str(req["S3Bucket"]), str(req.get("S3Prefix", ""))
        params = (table_arn, bucket, prefix, req.get("ExportTime"))
        token = req.get("ClientToken")
        if token is not None and token in self._tokens:
            arn, before = self._tokens[token]
            if before != params:
                raise DynamoError(400, DYNAMO, "ExportConflictException", "ClientToken reused")
            return {"ExportDescription": self.exports[arn]}
        export_id = new_export_id(now)
        arn = f"{table_arn}/export/{export_id}"
        self.exports[arn] = {
            "ExportArn": arn,
            "ExportStatus": "IN_PROGRESS",
            "StartTime": now,
            "TableArn": table_arn,
            "ExportTime": export_time,
            "S3Bucket": bucket,
            "S3Prefix": prefix,
            "ExportFormat": "DYNAMODB_JSON",
            "ExportType": "FULL_EXPORT",
        }
        if token is not None:
            self.exports[arn]["ClientToken"] = token
            self._tokens[token] = (arn, params)
        timer = threading.Timer(
            self.delay, self._write, (arn, table, items, partition_key, bucket, prefix, export_time, export_id)
        )
        timer.daemon = True
        timer.start()
        return {"ExportDescription": dict(self.exports[arn])}

    def _write(
        self,
        arn: str,
        table: str,
        items: list[dict[str, Any]],
        partition_key: str,
        bucket: str,
        prefix: str,
        export_time: float,
        export_id: str,
    ) -> None:
        description = self.exports[arn]
        try:
            written = write_export(
                self.s3,
                bucket,
                prefix,
                table,
                items,
                partition_key=partition_key,
                files=3,
                region=self.region,
                export_time=export_time,
                export_id=export_id,
            )
        except Exception as e:  # S3's answer, as DynamoDB reports it
            description.update(ExportStatus="FAILED", FailureCode="S3Error", FailureMessage=str(e), EndTime=time.time())
            return
        root = written.url.split("/", 3)[3]
        description.update(
            ExportStatus="COMPLETED",
            EndTime=time.time(),
            ExportManifest=f"{root}/manifest-summary.json",
            ItemCount=written.item_count,
            BilledSizeBytes=sum(len(orjson.dumps(i)) for i in items),
        )

    def describe(self, arn: str) -> dict[str, Any]:
        if arn not in self.exports:
            raise DynamoError(400, DYNAMO, "ExportNotFoundException", f"{arn} not found")
        return {"ExportDescription": dict(self.exports[arn])}

    def list(self, table_arn: str | None) -> dict[str, Any]:
        found = [e for e in self.exports.values() if table_arn is None or e["TableArn"] == table_arn]
        return {
            "ExportSummaries": [
                {"ExportArn": e["ExportArn"], "ExportStatus": e["ExportStatus"], "ExportType": e["ExportType"]}
                for e in found
            ]
        }
