"""DynamoDB fixtures: moto in server mode, reached over real HTTP like the production client path."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.config
import pytest

from podyn_fast.demo.emulator import LocalDynamo, request

REGION = "us-east-1"
# What moto accepts, and what real AWS refuses.
FAKE_CREDENTIAL = "testing"


@pytest.fixture(scope="session", autouse=True)
def fake_aws_credentials(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fake credentials for every test, so no client in the suite can sign a request real AWS accepts."""
    missing = tmp_path_factory.mktemp("aws") / "none"
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL", "AWS_REGION"):
            patch.delenv(name, raising=False)
        patch.setenv("AWS_ACCESS_KEY_ID", FAKE_CREDENTIAL)
        patch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_CREDENTIAL)
        patch.setenv("AWS_DEFAULT_REGION", REGION)
        # A developer's ~/.aws files and the EC2 metadata service are other ways to real credentials.
        patch.setenv("AWS_CONFIG_FILE", str(missing))
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(missing))
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        yield


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory, fake_aws_credentials: None) -> Iterator[str]:
    """The URL of a moto server, in its own process for the session (``http://127.0.0.1:PORT``)."""
    server = LocalDynamo(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def dynamodb(moto_endpoint: str) -> Any:
    """A boto3 DynamoDB client on the moto server, whose state is reset before the test."""
    status = request(int(moto_endpoint.rsplit(":", 1)[1]), "POST", "/moto-api/reset")
    assert status == 200, f"moto reset answered HTTP {status}"
    return boto3.client(
        "dynamodb",
        endpoint_url=moto_endpoint,
        region_name=REGION,
        aws_access_key_id=FAKE_CREDENTIAL,
        aws_secret_access_key=FAKE_CREDENTIAL,
    )


@pytest.fixture
def s3(moto_endpoint: str, dynamodb: Any) -> Any:
    """A boto3 S3 client on the moto server (reset with ``dynamodb``), with a bucket of this
    test's own as ``s3.bucket``."""
    client = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name=REGION,
        aws_access_key_id=FAKE_CREDENTIAL,
        aws_secret_access_key=FAKE_CREDENTIAL,
        config=botocore.config.Config(s3={"addressing_style": "path"}),
    )
    client.create_bucket(Bucket=(bucket := f"exports-{uuid.uuid4().hex[:8]}"))
    client.bucket = bucket
    return client
