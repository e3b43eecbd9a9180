"""Reading DynamoDB exports from S3 (moto's server over HTTP), written by tests/servers/exports.py
exactly as DynamoDB lays them out: manifests checked, data files copied once (a read that fails
taken up where it stopped), their MD5s verified, read as whole lines, and every item exact through
the Rust core's export-line encoder."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import tempfile
import tracemalloc
from collections.abc import Iterator
from typing import IO, Any

import boto3
import botocore.config
import orjson
import psycopg
import pytest
from psycopg.rows import TupleRow

from podyn_fast import _core
from podyn_fast.dynamo import exports
from podyn_fast.errors import ExportError
from tests import reference
from tests.corpus import CORPUS
from tests.fix_dynamo import FAKE_CREDENTIAL, REGION
from tests.servers.exports import write_export
from tests.servers.scan import typical_item
from tests.servers.tcp_proxy import TcpProxy


def _items() -> list[dict[str, Any]]:
    """Typical items and every case of the edge corpus that loads, keyed as reference.KEYS."""
    items = [json.loads(typical_item(i)) | {"pk": {"S": f"t{i}"}, "sk": {"N": str(i)}} for i in range(3000)]
    for n, case in enumerate(c for c in CORPUS if c["expect"] == "ok" and "item" in c and "modes" not in c):
        items.append(case["item"] | {"pk": {"S": f"corpus {n}"}, "sk": {"N": "0"}})
    return items


@pytest.fixture
def local() -> Iterator[IO[bytes]]:
    with tempfile.TemporaryFile() as f:
        yield f


def _fetched(s3: Any, data: exports.DataFile) -> IO[bytes]:
    local = tempfile.TemporaryFile()  # noqa: SIM115  (the caller closes it)
    exports.fetch(s3, s3.bucket, data, local)
    return local


def _load(s3: Any, manifest: exports.Manifest, loader: reference.Loader) -> int:
    loaded = 0
    for data in manifest.files:
        with _fetched(s3, data) as local:
            for chunk in exports.lines(local, data.key):
                encoded = loader.load(chunk, export=True)
                assert encoded.rejects == ()
                loaded += encoded.row_count
    return loaded


def test_an_export_reads_back_exactly(s3: Any, pg: psycopg.Connection[TupleRow], pg_schema: str) -> None:
    items = _items()
    written = write_export(s3, s3.bucket, "backups/daily", "Orders", items, partition_key="pk", files=5)
    manifest = exports.read_manifest(s3, exports.ExportLocation.parse(written.url + "/"))
    assert (manifest.table_name, manifest.region, manifest.item_count) == ("Orders", "us-east-1", len(items))
    assert len(manifest.files) == 6 and sorted(f.item_count for f in manifest.files)[0] == 0
    assert sum(f.item_count for f in manifest.files) == len(items)
    loader = reference.Loader(pg, pg_schema, "orders", reference.KEYS)
    assert _load(s3, manifest, loader) == len(items)
    reference.check_table(pg, pg_schema, "orders", loader.layout, items)


def test_lines_come_in_whole_lines_and_resume_after_the_lines_loaded(s3: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(exports, "CHUNK", 1000)  # many chunks from one small file
    items = [json.loads(typical_item(i)) for i in range(500)]
    written = write_export(s3, s3.bucket, "", "T", items, partition_key="pk", files=1, empty_files=0)
    (data,) = exports.read_manifest(s3, exports.ExportLocation.parse(written.url)).files
    with _fetched(s3, data) as local:
        chunks = list(exports.lines(local, data.key))
        assert len(chunks) > 10 and all(c.endswith(b"\n") and len(c) <= 1000 for c in chunks)
        whole = b"".join(chunks).splitlines()
        assert len(whole) == 500
        again = b"".join(exports.lines(local, data.key, skip=123)).splitlines()
    assert again == whole[123:]


def _rewrite(local: IO[bytes], body: bytes) -> IO[bytes]:
    local.seek(0)
    local.truncate()
    local.write(body)
    local.flush()
    return local


def test_a_damaged_or_cut_file_is_refused(s3: Any, local: IO[bytes]) -> None:
    items = [json.loads(typical_item(i)) for i in range(200)]
    written = write_export(s3, s3.bucket, "p", "T", items, partition_key="pk", files=1, empty_files=0)
    (data,) = exports.read_manifest(s3, exports.ExportLocation.parse(written.url)).files
    body = s3.get_object(Bucket=s3.bucket, Key=data.key)["Body"].read()
    damaged = bytearray(body)
    damaged[len(damaged) // 2] ^= 0x55
    s3.put_object(Bucket=s3.bucket, Key=data.key, Body=bytes(damaged))
    with pytest.raises(ExportError, match=r"MD5 .* the manifest says .* nothing of it is loaded"):
        exports.fetch(s3, s3.bucket, data, local)
    # What the MD5 does not cover (a file that is not the export's): the gzip stream itself.
    with pytest.raises(ExportError, match=f"{data.key}: .*cut short"):
        list(exports.lines(_rewrite(local, body[: len(body) // 2]), data.key))
    with pytest.raises(ExportError, match="not gzip, or damaged"):
        list(exports.lines(_rewrite(local, gzip.decompress(body)), data.key))
    # A file of no bytes at all is an empty partition's, as much as an empty gzip stream.
    assert list(exports.lines(_rewrite(local, b""), data.key)) == []
    assert list(exports.lines(_rewrite(local, gzip.compress(b"")), data.key)) == []
    s3.delete_object(Bucket=s3.bucket, Key=data.key)
    with pytest.raises(ExportError, match="is gone: the export's data file was deleted or moved"):
        exports.fetch(s3, s3.bucket, data, local)


def test_a_read_that_fails_midway_is_taken_up_where_it_stopped(s3: Any, moto_endpoint: str) -> None:
    # The network drops the connection twice in the middle of the data file: the copy goes on from
    # the byte it had reached (a ranged GET of the same version), rather than failing the load or
    # reading the whole file again, and the MD5 of what was put together is the manifest's.
    items = [json.loads(typical_item(i)) for i in range(3000)]
    written = write_export(s3, s3.bucket, "r", "T", items, partition_key="pk", files=1, empty_files=0)
    (data,) = exports.read_manifest(s3, exports.ExportLocation.parse(written.url)).files
    body = s3.get_object(Bucket=s3.bucket, Key=data.key)["Body"].read()
    assert len(body) > 100_000
    proxy = TcpProxy(int(moto_endpoint.rsplit(":", 1)[1]))
    try:
        client = boto3.client(
            "s3",
            endpoint_url=proxy.url,
            region_name=REGION,
            aws_access_key_id=FAKE_CREDENTIAL,
            aws_secret_access_key=FAKE_CREDENTIAL,
            config=botocore.config.Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )
        proxy.cut(after=len(body) // 3, times=2)
        with tempfile.TemporaryFile() as local:
            exports.fetch(client, s3.bucket, data, local)
            local.seek(0)
            assert hashlib.md5(local.read(), usedforsecurity=False).digest() == data.md5
        assert proxy.cuts == 2
        assert proxy.sent.count(b"\r\nrange: bytes=") + proxy.sent.count(b"\r\nRange: bytes=") == 2
        assert proxy.from_server < 1.5 * len(body), "the whole file was read again"
    finally:
        proxy.close()


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://bucket/AWSDynamoDB/x", "not an s3:// URL"),
        ("s3://bucket", "not an export's folder"),
        ("s3://bucket/prefix/01234-abc", "not an export's folder"),
        ("s3:///AWSDynamoDB/x", "not an export's folder"),
    ],
)
def test_what_is_not_an_export_folder_is_said(url: str, why: str) -> None:
    with pytest.raises(ExportError, match=why):
        exports.ExportLocation.parse(url)


def test_manifests_that_cannot_be_loaded_are_refused(s3: Any) -> None:
    items = [json.loads(typical_item(i)) for i in range(10)]
    missing = exports.ExportLocation.parse(f"s3://{s3.bucket}/none/AWSDynamoDB/0123-abcd")
    with pytest.raises(ExportError, match=r"no manifest at .* is the export finished"):
        exports.read_manifest(s3, missing)
    ion = write_export(s3, s3.bucket, "i", "T", items, partition_key="pk", output_format="ION")
    with pytest.raises(ExportError, match="is in ION: export the table again with the DYNAMODB_JSON format"):
        exports.read_manifest(s3, exports.ExportLocation.parse(ion.url))
    # The summary's count and the files' counts disagree: some file is missing from the list.
    short = write_export(s3, s3.bucket, "s", "T", items, partition_key="pk", files=2)
    location = exports.ExportLocation.parse(short.url)
    listed = s3.get_object(Bucket=s3.bucket, Key=f"{location.root}/manifest-files.json")["Body"].read()
    s3.put_object(Bucket=s3.bucket, Key=f"{location.root}/manifest-files.json", Body=listed.splitlines()[0])
    with pytest.raises(ExportError, match=r"the data files hold .* items, the summary says 10"):
        exports.read_manifest(s3, location)


def test_a_file_that_inflates_a_hundredfold_is_read_in_bounded_memory(local: IO[bytes], monkeypatch: Any) -> None:
    # 30 MB of one line repeated gzips to a few hundred kB: inflated a whole read block at a time,
    # the reader held tens of MB at once; it holds about a chunk now. (tracemalloc sees the chunks
    # handed to Python; the Rust core's own buffer is bounded by its unit tests.)
    monkeypatch.setattr(exports, "CHUNK", 256 << 10)
    line = orjson.dumps({"Item": json.loads(typical_item(1))}) + b"\n"
    body = gzip.compress(line * (30_000_000 // len(line)), mtime=0)
    assert len(body) < 1_000_000
    _rewrite(local, body)
    tracemalloc.start()
    try:
        total = sum(chunk.count(b"\n") for chunk in exports.lines(local, "big.json.gz"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 30_000_000 // len(line)
    assert peak < 8_000_000, f"peak {peak / 1e6:.1f} MB while reading"


def test_a_file_that_does_not_hold_its_manifests_item_count_never_ends(s3: Any) -> None:
    # Its MD5 and gzip are sound, but the manifest counts one item more: the reader refuses the
    # file's last page (the one that would mark it loaded) instead of calling it done.
    items = [json.loads(typical_item(i)) for i in range(50)]
    written = write_export(s3, s3.bucket, "c", "T", items, partition_key="pk", files=1, empty_files=0)
    (data,) = exports.read_manifest(s3, exports.ExportLocation.parse(written.url)).files
    layout = _core.Layout(
        [("pk", "S"), ("sk", "N")], _core.key_columns([("pk", "S"), ("sk", "N")]), mode="jsonb", document="data"
    )
    for count, fails in ((data.item_count, False), (data.item_count + 1, True)):
        claimed = dataclasses.replace(data, item_count=count)
        reader = exports.ExportFileReader(s3, s3.bucket, claimed, start=None, layout=layout)
        reader.start()
        try:
            if fails:
                with pytest.raises(ExportError, match="holds 50 lines, the manifest says 51 items"):
                    reader.next_page()
            else:
                page = reader.next_page()
                assert page is not None and page.position is None and page.encoded.item_count == 50
        finally:
            reader.stop()
