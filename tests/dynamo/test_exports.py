"""Reading DynamoDB exports from S3 (moto's server over HTTP), written by tests/servers/exports.py
exactly as DynamoDB lays them out: manifests checked, data files streamed as whole lines, their
MD5s verified, and every item exact through the Rust core's export-line encoder."""

from __future__ import annotations

import dataclasses
import gzip
import json
import tracemalloc
from typing import Any

import orjson
import psycopg
import pytest
from psycopg.rows import TupleRow

from podyn_fast import _core
from podyn_fast.dynamo import exports
from podyn_fast.errors import ExportError
from tests import reference
from tests.corpus import CORPUS
from tests.servers.exports import write_export
from tests.servers.scan import typical_item


def _items() -> list[dict[str, Any]]:
    """Typical items and every case of the edge corpus that loads, keyed as reference.KEYS."""
    items = [json.loads(typical_item(i)) | {"pk": {"S": f"t{i}"}, "sk": {"N": str(i)}} for i in range(3000)]
    for n, case in enumerate(c for c in CORPUS if c["expect"] == "ok" and "item" in c and "modes" not in c):
        items.append(case["item"] | {"pk": {"S": f"corpus {n}"}, "sk": {"N": "0"}})
    return items


def _load(s3: Any, manifest: exports.Manifest, loader: reference.Loader) -> int:
    loaded = 0
    for data in manifest.files:
        exports.verify(s3, s3.bucket, data)
        for chunk in exports.lines(s3, s3.bucket, data.key):
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
    chunks = list(exports.lines(s3, s3.bucket, data.key))
    assert len(chunks) > 10 and all(c.endswith(b"\n") for c in chunks)
    whole = b"".join(chunks).splitlines()
    assert len(whole) == 500
    again = b"".join(exports.lines(s3, s3.bucket, data.key, skip=123)).splitlines()
    assert again == whole[123:]


def test_a_damaged_or_cut_file_is_refused(s3: Any) -> None:
    items = [json.loads(typical_item(i)) for i in range(200)]
    written = write_export(s3, s3.bucket, "p", "T", items, partition_key="pk", files=1, empty_files=0)
    (data,) = exports.read_manifest(s3, exports.ExportLocation.parse(written.url)).files
    body = s3.get_object(Bucket=s3.bucket, Key=data.key)["Body"].read()
    damaged = bytearray(body)
    damaged[len(damaged) // 2] ^= 0x55
    s3.put_object(Bucket=s3.bucket, Key=data.key, Body=bytes(damaged))
    with pytest.raises(ExportError, match=r"MD5 .* the manifest says .* nothing of it is loaded"):
        exports.verify(s3, s3.bucket, data)
    s3.put_object(Bucket=s3.bucket, Key=data.key, Body=body[: len(body) // 2])
    with pytest.raises(ExportError, match="cut short"):
        list(exports.lines(s3, s3.bucket, data.key))
    # A file of no bytes at all is an empty partition's, as much as an empty gzip stream.
    s3.put_object(Bucket=s3.bucket, Key=data.key, Body=b"")
    assert list(exports.lines(s3, s3.bucket, data.key)) == []
    s3.put_object(Bucket=s3.bucket, Key=data.key, Body=gzip.compress(b""))
    assert list(exports.lines(s3, s3.bucket, data.key)) == []


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


def test_a_file_that_inflates_a_hundredfold_is_read_in_bounded_memory(s3: Any, monkeypatch: Any) -> None:
    # 30 MB of one line repeated gzips to a few hundred kB: inflated a whole read block at a time,
    # the reader held tens of MB at once; it holds about a chunk now.
    monkeypatch.setattr(exports, "CHUNK", 256 << 10)
    line = orjson.dumps({"Item": json.loads(typical_item(1))}) + b"\n"
    body = gzip.compress(line * (30_000_000 // len(line)), mtime=0)
    assert len(body) < 1_000_000
    s3.put_object(Bucket=s3.bucket, Key="big.json.gz", Body=body)
    tracemalloc.start()
    try:
        total = sum(chunk.count(b"\n") for chunk in exports.lines(s3, s3.bucket, "big.json.gz"))
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
