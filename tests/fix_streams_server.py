"""Fixtures for the DynamoDB + Streams test server (tests/servers/streams.py): a fresh server per test.

Registered by naming this module in ``pytest_plugins`` in tests/conftest.py (``"tests.fix_streams_server"``).
The server checks no signature; clients still need credentials, and ``fake_aws_credentials``
(tests.fix_dynamo, autouse) puts fake ones in the environment for every test. ``client`` passes them
explicitly as well, so it also works outside pytest.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import botocore.config
import pytest

from tests.servers.streams import REGION, StreamsServer

FAKE = "testing"


@pytest.fixture
def streams_server() -> Iterator[StreamsServer]:
    """A started StreamsServer with no tables, for this test only (starting one takes about a millisecond)."""
    with StreamsServer() as server:
        yield server


def client(server: StreamsServer, service: str = "dynamodbstreams", **config: Any) -> Any:
    """A boto3 client (``"dynamodb"`` or ``"dynamodbstreams"``) on the server; ``config`` goes to botocore's Config."""
    return boto3.client(
        service,
        endpoint_url=server.endpoint,
        region_name=REGION,
        aws_access_key_id=FAKE,
        aws_secret_access_key=FAKE,
        config=botocore.config.Config(**config),
    )
