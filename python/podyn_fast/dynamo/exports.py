"""DynamoDB exports in S3: where one is, what its manifests say, and its data files, each copied
into a local temporary file, checked against its MD5 and read as whole lines for the Rust core
(``Layout.encode_export_lines``).

An export's folder is ``s3://BUCKET/PREFIX/AWSDynamoDB/EXPORT_ID``: ``manifest-summary.json``
names the table, the export time, the format and the item count; ``manifest-files.json`` lists
the data files (gzip JSON Lines, one ``{"Item": …}`` a line) with their item counts and MD5s.
docs/dynamodb.md ("Exports") has the layout and its sources.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import IO, Any

import orjson
from botocore.exceptions import ClientError

from podyn_fast import retry
from podyn_fast._core import ExportLines, Layout
from podyn_fast.codec import Page
from podyn_fast.dynamo.scan import PageReader
from podyn_fast.errors import BodyError, ExportError, Interrupted

log = logging.getLogger("podyn_fast")

SUMMARY_VERSION = "2020-06-30"
# Decompressed bytes handed to the encoder at a time (whole lines: a line may make it longer).
CHUNK = 4 << 20
# Bytes of a data file read from S3 at a time.
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
    """A manifest's bytes, read as a data file is (``_copy``)."""
    missing = (
        f"no {what} at s3://{bucket}/{key}: is the export finished, and is this its folder (…/AWSDynamoDB/EXPORT_ID)?"
    )
    into = io.BytesIO()
    _copy(s3, bucket, key, into, missing, stop=threading.Event(), alive=lambda: None)
    return into.getvalue()


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


def fetch(
    s3: Any,
    bucket: str,
    data: DataFile,
    into: IO[bytes],
    *,
    stopping: threading.Event | None = None,
    alive: Callable[[], None] = lambda: None,
) -> None:
    """Copy the data file into ``into`` (a local temporary file) and check it against the
    manifest's MD5: ExportError if it differs (the file is damaged, or not the one the export
    wrote), so that nothing of a damaged file is ever loaded, and S3 is read once. ``alive`` is
    called as bytes arrive; ``stopping`` set ends the copy (Interrupted)."""
    url = f"s3://{bucket}/{data.key}"
    missing = f"{url} is gone: the export's data file was deleted or moved"
    digest = _copy(s3, bucket, data.key, into, missing, stop=stopping or threading.Event(), alive=alive)
    into.flush()
    if digest.digest() != data.md5:
        raise ExportError(
            f"{url}: its MD5 is {digest.hexdigest()}, the manifest says {data.md5.hex()}: "
            f"the file is damaged; nothing of it is loaded"
        )


def _copy(
    s3: Any, bucket: str, key: str, into: IO[bytes], missing: str, *, stop: threading.Event, alive: Callable[[], None]
) -> Any:
    """The object's bytes written to ``into``; returns their MD5 (a hashlib object). ``missing``
    is the ExportError's text when there is no such object.

    A read that fails (the network, a 5xx, SlowDown) is retried as every AWS call is, and taken up
    where it stopped: a ranged GET of the same version (If-Match its ETag) for the bytes not read
    yet."""
    url = f"s3://{bucket}/{key}"
    digest = hashlib.md5(usedforsecurity=False)
    got, size, etag = 0, None, None
    backoff = retry.Backoff(0.5, 20.0)
    while size is None or got < size:
        rest: dict[str, str] = {}
        if got:
            rest["Range"] = f"bytes={got}-"
            if etag:
                rest["IfMatch"] = etag
        try:
            alive()
            response = s3.get_object(Bucket=bucket, Key=key, **rest)
            etag, size = response.get("ETag"), got + int(response["ContentLength"])
            body = response["Body"]
            while block := body.read(_READ):
                digest.update(block)
                into.write(block)
                got += len(block)
                alive()
                backoff.reset()
                if stop.is_set():
                    raise Interrupted(signal.SIGINT)
        except retry.AWS_FAILURES as e:
            failure = retry.aws_failure(e)
            if failure.why in ("NoSuchKey", "404"):
                raise ExportError(missing) from None
            if not failure.transient or backoff.failing_for() > failure.give_up_after:
                raise ExportError(f"{url}: reading it failed after {got:,} bytes: {e}") from None
            delay = backoff.delay()
            log.warning(
                "%s: reading it failed after %s bytes (%s); taking it up again in %.1f s", url, f"{got:,}", e, delay
            )
            if stop.wait(delay):
                raise Interrupted(signal.SIGINT) from None
    return digest


def lines(file: IO[bytes], url: str, *, skip: int = 0) -> Iterator[bytes]:
    """The lines of a data file copied into ``file``, in chunks of whole lines (about CHUNK
    bytes; inflated by the Rust core, a chunk at a time, never the whole file in memory); the
    first ``skip`` lines (loaded already) left out."""
    file.seek(0)  # the Rust core reads from the descriptor's offset, which this shares
    reader = ExportLines(file.fileno(), skip=skip, chunk=CHUNK)
    while True:
        try:
            chunk = reader.next_chunk()
        except BodyError as e:
            raise ExportError(f"{url}: {e}") from None
        if chunk is None:
            return
        yield chunk


def position(lines_loaded: int) -> bytes:
    """A data file's position as committed with its rows: the count of its lines loaded."""
    return lines_loaded.to_bytes(8, "big")


def lines_loaded(position: bytes | None) -> int:
    return int.from_bytes(position, "big") if position else 0


class ExportFileReader(PageReader):
    """Reads one data file of an export, from the line after those loaded already, in pages of
    whole lines. The file is first copied from S3 into a local temporary file and checked against
    the manifest's MD5 (``fetch``), so that nothing of a damaged file is ever loaded; a file taken
    up again after a stop is checked again, as it has to be inflated from its start anyway."""

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
        # Deleted as soon as it is closed, or when this process ends however it ends.
        with tempfile.TemporaryFile(prefix="podyn-export-") as local:
            fetch(self.s3, self.bucket, self.data, local, stopping=self.stopping, alive=self.alive)
            previous: bytes | None = None
            for chunk in lines(local, self.url, skip=done):
                if self.stopping.is_set():
                    return
                self.alive()
                if previous is not None:
                    done = self._page(previous, done, last=False)
                previous = chunk
        # The last page (an empty one for an empty file) ends the file.
        self._page(previous or b"", done, last=True)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.data.key}"

    def _page(self, body: bytes, done: int, *, last: bool) -> int:
        layout = self.layout
        done += body.count(b"\n") + (1 if body and not body.endswith(b"\n") else 0)
        if last and done != self.data.item_count:
            # Its end is not committed, so the file stays to do: the load does not call it loaded.
            raise ExportError(
                f"{self.url} holds {done:,} lines, the manifest says {self.data.item_count:,} "
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
