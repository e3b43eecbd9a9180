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

Items are spread over the files by a hash of their partition key (as DynamoDB's partitions hold
them), so a file holds its items in no key order.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson

ACCOUNT = "123456789012"


@dataclass(frozen=True)
class WrittenExport:
    url: str
    """``s3://bucket/prefix/AWSDynamoDB/ExportId``: what `migrate --export` takes."""
    export_arn: str
    data_keys: tuple[str, ...]
    item_count: int


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _partition(item: dict[str, Any], key: str, files: int) -> int:
    return int.from_bytes(hashlib.md5(orjson.dumps(item[key])).digest()[:4], "big") % files  # noqa: S324


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
) -> WrittenExport:
    """Write an export of ``items`` (DynamoDB JSON maps) in ``files`` data files plus
    ``empty_files`` empty ones; ``lines`` replaces the items' lines (a damaged export)."""
    started = time.time()
    export_time = started if export_time is None else export_time
    export_id = f"{int(started * 1000):014d}-{secrets.token_hex(4)}"
    root = f"{prefix.strip('/')}/AWSDynamoDB/{export_id}" if prefix.strip("/") else f"AWSDynamoDB/{export_id}"
    table_arn = f"arn:aws:dynamodb:{region}:{ACCOUNT}:table/{table}"
    export_arn = f"{table_arn}/export/{export_id}"
    s3.put_object(Bucket=bucket, Key=f"{root}/_started", Body=b"")

    per_file: list[list[bytes]] = [[] for _ in range(files)]
    if lines is None:
        for item in items:
            per_file[_partition(item, partition_key, files)].append(orjson.dumps({"Item": item}) + b"\n")
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
