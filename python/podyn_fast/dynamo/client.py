"""A botocore DynamoDB client whose Scan responses come back as raw bytes.

botocore parses every response into Python objects (≈ 110 µs per item), which the hot path must
not pay: a ``before-parse`` hook keeps the raw body of successful responses and hands botocore an
empty document instead. Error responses are left intact, so botocore's retry logic (throttling,
5xx, CRC32 mismatch) still sees them; and since the raw body is stored in the response dict of the
attempt that succeeded, retries cannot mix bodies up.
"""

from __future__ import annotations

from typing import Any

import botocore.config
import botocore.loaders
import botocore.parsers
import botocore.session
import orjson

from podyn_fast._core import crc32
from podyn_fast.errors import BodyChecksumError
from podyn_fast.settings import AwsConfig

RAW_BODY = "PodynRawBody"

# botocore's data files (service models, endpoint rules, partitions), read and parsed once per
# process: every new Session would read them again, 80-100 ms of CPU for the two clients of a
# RawDynamo. They depend on no credential, region or profile.
_loaders: list[botocore.loaders.Loader] = []  # the process's one loader, once made


def session(profile: str | None) -> botocore.session.Session:
    """A botocore Session of ``profile`` that shares this process's cache of botocore's data."""
    made = botocore.session.Session(profile=profile)
    if _loaders:
        made.register_component("data_loader", _loaders[0])
    else:
        _loaders.append(made.get_component("data_loader"))
    return made


def warm(profile: str | None, services: tuple[str, ...] = ("dynamodb", "dynamodbstreams")) -> None:
    """Read botocore's data for ``services`` into the cache, making no client: a process forked
    afterwards has it (a client must not be made before a fork)."""
    loader = session(profile).get_component("data_loader")
    for name in ("endpoints", "partitions", "sdk-default-configuration", "_retry"):
        loader.load_data(name)
    for service in services:
        for kind in ("service-2", "endpoint-rule-set-1"):
            loader.load_service_model(service, kind)


def _keep_raw_body(response_dict: dict[str, Any], customized_response_dict: dict[str, Any], **_: Any) -> None:
    if response_dict["status_code"] != 200:
        return  # botocore reads the error code from the body to decide on retries
    body: bytes = response_dict["body"]
    # A damaged body is left to botocore, whose retry handler checks the CRC next and retries.
    # But its standard mode returns the last attempt as a success even when that one fails the
    # check too: without our RAW_BODY, scan_page then raises rather than pass the page on.
    headers = response_dict["headers"]
    expected = headers.get("x-amz-crc32")
    if expected is not None:
        if crc32(body) != int(expected):
            return
        # Checked: botocore's retry handler, which reads these same headers, need not check again.
        del headers["x-amz-crc32"]
    customized_response_dict[RAW_BODY] = body
    response_dict["body"] = b"{}"


class RawDynamo:
    """Scan pages, GetRecords and BatchGetItem responses as raw bytes; everything else (signing,
    endpoints, retries, the other calls' parsing) by botocore."""

    def __init__(
        self,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        profile: str | None = None,
        max_attempts: int = 10,
    ) -> None:
        made = session(profile)
        config = botocore.config.Config(
            retries={"mode": "standard", "max_attempts": max_attempts},
            # No call waits forever: a page of 1 MB arrives in well under a second.
            connect_timeout=10,
            read_timeout=60,
            # One connection per thread that scans; botocore's default pool of 10 is plenty.
            max_pool_connections=10,
        )
        self.client = made.create_client("dynamodb", region_name=region, endpoint_url=endpoint_url, config=config)
        self.client.meta.events.register("before-parse.dynamodb.Scan", _keep_raw_body)
        self.client.meta.events.register("before-parse.dynamodb.BatchGetItem", _keep_raw_body)
        self.streams = made.create_client(
            "dynamodbstreams", region_name=region, endpoint_url=endpoint_url, config=config
        )
        self.streams.meta.events.register("before-parse.dynamodb-streams.GetRecords", _keep_raw_body)

    @classmethod
    def of(cls, aws: AwsConfig) -> RawDynamo:
        return cls(region=aws.region, endpoint_url=aws.endpoint_url, profile=aws.profile, max_attempts=aws.max_attempts)

    def scan_page(
        self,
        table: str,
        *,
        segment: int | None = None,
        total_segments: int | None = None,
        exclusive_start_key: bytes | None = None,
        limit: int | None = None,
        consistent_read: bool = False,
    ) -> bytes:
        """One Scan request; returns the response body exactly as DynamoDB sent it."""
        params: dict[str, Any] = {
            "TableName": table,
            "ReturnConsumedCapacity": "TOTAL",
            "ConsistentRead": consistent_read,
        }
        if total_segments is not None:
            params["Segment"] = segment or 0
            params["TotalSegments"] = total_segments
        if exclusive_start_key is not None:
            # A key is a few small attributes: parsing it here costs nothing per item.
            params["ExclusiveStartKey"] = orjson.loads(exclusive_start_key)
        if limit is not None:
            params["Limit"] = limit
        return _raw(self.client.scan, "Scan", params)

    def get_records(self, iterator: str, limit: int = 1000) -> bytes:
        """One GetRecords request; returns the response body exactly as DynamoDB Streams sent it."""
        return _raw(self.streams.get_records, "GetRecords", {"ShardIterator": iterator, "Limit": limit})

    def batch_get(self, table: str, keys: list[dict[str, Any]], consistent_read: bool = True) -> bytes:
        """One BatchGetItem request (at most 100 keys) for one table; returns the raw body."""
        params = {"RequestItems": {table: {"Keys": keys, "ConsistentRead": consistent_read}}}
        return _raw(self.client.batch_get_item, "BatchGetItem", params)


def _raw(call: Any, operation: str, params: dict[str, Any]) -> bytes:
    try:
        response = call(**params)
    except botocore.parsers.ResponseParserError as e:
        raise BodyChecksumError(f"unreadable {operation} response: {e}") from None
    body: bytes | None = response.get(RAW_BODY)
    if body is None:
        raise BodyChecksumError(f"{operation} response failed its CRC32 check on every attempt")
    return body


def s3_client(aws: AwsConfig) -> Any:
    """A botocore S3 client for exports: credentials, region, timeouts and retries as DynamoDB's;
    path-style addressing on an endpoint of the user's (a local S3 has no bucket host names)."""
    made = session(aws.profile)
    config = botocore.config.Config(
        retries={"mode": "standard", "max_attempts": aws.max_attempts},
        connect_timeout=10,
        read_timeout=60,
        s3={"addressing_style": "path"} if aws.s3_endpoint_url else None,
    )
    return made.create_client("s3", region_name=aws.region, endpoint_url=aws.s3_endpoint_url, config=config)
