"""DynamoDB exports in S3: where one is, what its manifests say, and its data files streamed as
whole lines for the Rust core (``Layout.encode_export_lines``).

An export's folder is ``s3://BUCKET/PREFIX/AWSDynamoDB/EXPORT_ID``: ``manifest-summary.json``
names the table, the export time, the format and the item count; ``manifest-files.json`` lists
the data files (gzip JSON Lines, one ``{"Item": …}`` a line) with their item counts and MD5s.
docs/dynamodb.md ("Exports") has the layout and its sources.
"""

from __future__ import annotations

import base64
import hashlib
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson
from botocore.exceptions import ClientError

from podyn_fast._core import Layout
from podyn_fast.codec import Page
from podyn_fast.dynamo.scan import PageReader
from podyn_fast.errors import ExportError

SUMMARY_VERSION = "2020-06-30"
# Decompressed bytes handed to the encoder at a time (whole lines: a line may make it longer).
CHUNK = 4 << 20
_READ = 1 << 20


@dataclass(frozen=True)
class ExportLocation:
    bucket: str
    root: str
    """The folder's key, ``PREFIX/AWSDynamoDB/EXPORT_ID`` (no slash at either end)."""

    @classmethod
    def parse(cls, url: str) -> ExportLocation:
        """The export folder ``url`` names; ExportError (saying what is expected) otherwise."""
        expected = "an export folder is named s3://BUCKET/PREFIX/AWSDynamoDB/EXPORT_ID"
        if not url.startswith("s3://"):
            raise ExportError(f"{url!r} is not an s3:// URL: {expected}")
        bucket, _, root = url[len("s3://") :].partition("/")
        root = root.strip("/")
        parts = root.split("/")
        if not bucket or len(parts) < 2 or parts[-2] != "AWSDynamoDB" or not parts[-1]:
            raise ExportError(f"{url!r} is not an export's folder: {expected}")
        return cls(bucket, root)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.root}"


@dataclass(frozen=True)
class DataFile:
    key: str
    item_count: int
    md5: bytes
    """The MD5 of the object as stored (gzip), from the manifest."""


@dataclass(frozen=True)
class Manifest:
    location: ExportLocation
    export_arn: str
    table_arn: str
    export_time: float
    """Seconds since the epoch: the export holds every write committed a minute before it."""
    item_count: int
    files: tuple[DataFile, ...]

    @property
    def table_name(self) -> str:
        return self.table_arn.rsplit("/", 1)[-1]

    @property
    def region(self) -> str:
        return self.table_arn.split(":")[3]


def _get(s3: Any, bucket: str, key: str, what: str) -> bytes:
    try:
        return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404"):
            raise ExportError(
                f"no {what} at s3://{bucket}/{key}: is the export finished, and is this its folder "
                f"(…/AWSDynamoDB/EXPORT_ID)?"
            ) from None
        raise


def _time(text: object, what: str) -> float:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ExportError(f"the export's {what} {text!r} is not an ISO-8601 time") from None


def read_manifest(s3: Any, location: ExportLocation) -> Manifest:
    """The export's manifests, checked: a full export in DYNAMODB_JSON whose files add up."""
    where = location.url
    try:
        summary = orjson.loads(_get(s3, location.bucket, f"{location.root}/manifest-summary.json", "manifest"))
    except orjson.JSONDecodeError as e:
        raise ExportError(f"{where}/manifest-summary.json is not JSON ({e})") from None
    if summary.get("version") != SUMMARY_VERSION:
        raise ExportError(f"{where}: manifest version {summary.get('version')!r} is not {SUMMARY_VERSION!r}")
    kind = summary.get("exportType", "FULL_EXPORT")
    if kind != "FULL_EXPORT":
        raise ExportError(f"{where} is an {kind}: only a full export (FULL_EXPORT) can be loaded as a snapshot")
    form = summary.get("outputFormat")
    if form != "DYNAMODB_JSON":
        raise ExportError(f"{where} is in {form}: export the table again with the DYNAMODB_JSON format")
    table_arn = str(summary.get("tableArn", ""))
    if not table_arn.startswith("arn:") or ":table/" not in table_arn:
        raise ExportError(f"{where}: the manifest names no table (tableArn {table_arn!r})")
    files_key = str(summary.get("manifestFilesS3Key") or f"{location.root}/manifest-files.json")
    files = []
    for n, line in enumerate(_get(s3, location.bucket, files_key, "list of data files").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = orjson.loads(line)
            files.append(
                DataFile(str(entry["dataFileS3Key"]), int(entry["itemCount"]), base64.b64decode(entry["md5Checksum"]))
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ExportError(f"s3://{location.bucket}/{files_key} line {n} is not a data file entry ({e})") from None
    total = int(summary.get("itemCount", -1))
    if sum(f.item_count for f in files) != total:
        raise ExportError(
            f"{where}: the data files hold {sum(f.item_count for f in files):,} items, the summary says {total:,}"
        )
    return Manifest(
        location,
        str(summary.get("exportArn", "")),
        table_arn,
        _time(summary.get("exportTime"), "exportTime"),
        total,
        tuple(files),
    )


def verify(s3: Any, bucket: str, data: DataFile) -> None:
    """Read the object once and check its MD5 against the manifest's: ExportError if it differs
    (the file is damaged, or not the one the export wrote)."""
    digest = hashlib.md5(usedforsecurity=False)
    body = s3.get_object(Bucket=bucket, Key=data.key)["Body"]
    while block := body.read(_READ):
        digest.update(block)
    if digest.digest() != data.md5:
        raise ExportError(
            f"s3://{bucket}/{data.key}: its MD5 is {digest.hexdigest()}, the manifest says {data.md5.hex()}: "
            f"the file is damaged; nothing of it is loaded"
        )


def lines(s3: Any, bucket: str, key: str, *, skip: int = 0) -> Iterator[bytes]:
    """The data file's decompressed lines, in chunks of whole lines (about CHUNK bytes), never
    the whole file in memory; the first ``skip`` lines (loaded already) left out."""
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    inflate = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
    pending = b""
    compressed = 0
    while block := body.read(_READ):
        compressed += len(block)
        data = block
        while data:
            # At most CHUNK bytes out of each step: JSON Lines compress well (repeated items far
            # better still), and a whole block inflated at once could be a hundred times its size.
            pending += inflate.decompress(data, CHUNK)
            data = inflate.unconsumed_tail
            if inflate.eof and inflate.unused_data:
                # A file may hold several gzip members one after the other.
                data = inflate.unused_data
                inflate = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
            while len(pending) >= CHUNK:
                # The last whole line within CHUNK, or the one line that is longer.
                cut = pending.rfind(b"\n", 0, CHUNK) + 1 or pending.find(b"\n", CHUNK) + 1
                if not cut:
                    break
                chunk, pending = pending[:cut], pending[cut:]
                chunk, skip = _skip(chunk, skip)
                if chunk:
                    yield chunk
    pending += inflate.flush()
    # An empty partition's file may be an empty gzip stream, or no bytes at all.
    if compressed and not inflate.eof:
        raise ExportError(f"s3://{bucket}/{key} ends in the middle of its gzip stream: the file is cut short")
    if pending:
        pending, skip = _skip(pending, skip)
        if pending:
            yield pending


def _skip(chunk: bytes, skip: int) -> tuple[bytes, int]:
    """``chunk`` without its first ``skip`` lines, and how many are left to skip."""
    at = 0
    while skip and at < len(chunk):
        end = chunk.find(b"\n", at)
        at = len(chunk) if end < 0 else end + 1
        skip -= 1
    return chunk[at:], skip


def position(lines_loaded: int) -> bytes:
    """A data file's position as committed with its rows: the count of its lines loaded."""
    return lines_loaded.to_bytes(8, "big")


def lines_loaded(position: bytes | None) -> int:
    return int.from_bytes(position, "big") if position else 0


class ExportFileReader(PageReader):
    """Reads one data file of an export, from the line after those loaded already, in pages of
    whole lines. A file read from its start is first checked against the manifest's MD5 (a read of
    its own), so that nothing of a damaged file is ever loaded."""

    def __init__(
        self,
        s3: Any,
        bucket: str,
        data: DataFile,
        *,
        start: bytes | None,
        layout: Layout,
        alive: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(f"export {data.key.rsplit('/', 1)[-1]}", layout)
        self.s3, self.bucket, self.data, self.skip = s3, bucket, data, lines_loaded(start)
        self.alive = alive

    def read(self) -> None:
        done = self.skip
        if done == 0:
            self.alive()
            verify(self.s3, self.bucket, self.data)
        previous: bytes | None = None
        for chunk in lines(self.s3, self.bucket, self.data.key, skip=done):
            if self.stopping.is_set():
                return
            self.alive()
            if previous is not None:
                done = self._page(previous, done, last=False)
            previous = chunk
        # The last page (an empty one for an empty file) ends the file.
        self._page(previous or b"", done, last=True)

    def _page(self, body: bytes, done: int, *, last: bool) -> int:
        layout = self.layout
        done += body.count(b"\n") + (1 if body and not body.endswith(b"\n") else 0)
        if last and done != self.data.item_count:
            # Its end is not committed, so the file stays to do: the load does not call it loaded.
            raise ExportError(
                f"s3://{self.bucket}/{self.data.key} holds {done:,} lines, the manifest says {self.data.item_count:,} "
                f"items: this is not the file the export wrote; its last page is not loaded"
            )
        self._put(Page(body, layout, layout.encode_export_lines(body), None if last else position(done), lines=True))
        return done


@dataclass(frozen=True)
class ExportTarget:
    """Where ``--export-to`` asks DynamoDB to write an export: ``s3://BUCKET[/PREFIX]``."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> ExportTarget:
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not url.startswith("s3://") or not bucket:
            raise ExportError(f"{url!r} is not an S3 location: --export-to takes s3://BUCKET[/PREFIX]")
        return cls(bucket, prefix.strip("/"))


def request(dynamo: Any, table_arn: str, target: ExportTarget, export_time: float | None) -> str:
    """Ask DynamoDB for a full export of ``table_arn`` (DYNAMODB_JSON) as of ``export_time`` (None:
    now); returns its ARN. The same request again (a rerun of the same command, within the 8 hours
    DynamoDB keeps a client token) is the same export, not a second one."""
    token = hashlib.sha256(f"{table_arn}|{target.bucket}|{target.prefix}|{export_time}".encode()).hexdigest()[:36]
    params: dict[str, Any] = {
        "TableArn": table_arn,
        "S3Bucket": target.bucket,
        "ExportFormat": "DYNAMODB_JSON",
        "ClientToken": token,
    }
    if target.prefix:
        params["S3Prefix"] = target.prefix
    if export_time is not None:
        params["ExportTime"] = datetime.fromtimestamp(export_time, timezone.utc)
    try:
        return str(dynamo.client.export_table_to_point_in_time(**params)["ExportDescription"]["ExportArn"])
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        name = table_arn.rsplit("/", 1)[-1]
        if code == "PointInTimeRecoveryUnavailableException":
            raise ExportError(
                f"table {name!r} has no point-in-time recovery, which an export needs: turn it on with "
                f"`aws dynamodb update-continuous-backups --table-name {name} --point-in-time-recovery-specification "
                f"PointInTimeRecoveryEnabled=true`, or load by Scan (without --export-to)"
            ) from None
        raise


def wait(dynamo: Any, export_arn: str, on_status: Callable[[str, float], None]) -> ExportLocation:
    """Until the export is written: its folder once COMPLETED; ExportError if it FAILED.
    ``on_status(status, seconds since it was asked for)`` after every look."""
    delay, started = 0.5, time.monotonic()
    while True:
        description = dynamo.client.describe_export(ExportArn=export_arn)["ExportDescription"]
        status = str(description.get("ExportStatus"))
        on_status(status, time.monotonic() - started)
        if status == "COMPLETED":
            manifest = str(description["ExportManifest"])
            return ExportLocation(str(description["S3Bucket"]), manifest.rsplit("/", 1)[0].strip("/"))
        if status == "FAILED":
            raise ExportError(
                f"the export {export_arn} failed: {description.get('FailureCode')}: {description.get('FailureMessage')}"
            )
        time.sleep(delay)
        # Exports take minutes: look again less often, every 30 s at most.
        delay = min(delay * 2, 30.0)
