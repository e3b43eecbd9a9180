"""Fixtures for the fast DynamoDB Scan server (tests/servers/scan.py), for tests too big for moto.

Registered by naming this module in ``pytest_plugins`` in tests/conftest.py (``"tests.fix_scan_server"``).
Clients need credentials but the server checks none: ``RawDynamo`` takes the fake ones that
``fake_aws_credentials`` (tests.fix_dynamo) puts in the environment.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fix_pg import CITUS_DSN
from tests.moto_migrate import PODYN
from tests.servers.scan import TYPICAL_KEYS, ScanServer, TableSpec, all_types_item, typical_item

TYPICAL = "typical"
"""A table of ``TYPICAL_COUNT`` ``typical_item`` items (about 9 MB: several 1 MB pages)."""
TYPICAL_COUNT = 20_000
ALL_TYPES = "all_types"
"""A table of ``ALL_TYPES_COUNT`` ``all_types_item`` items, with a sparse GSI on ``sparse``."""
ALL_TYPES_COUNT = 1_000


@pytest.fixture(scope="session")
def scan_server() -> Iterator[ScanServer]:
    """One running ScanServer for the session with the tables ``TYPICAL`` and ``ALL_TYPES``.

    Tests that change faults or tables should use ``fast_dynamo``, which puts them back.
    """
    server = ScanServer(
        [
            TableSpec(TYPICAL, TYPICAL_KEYS, typical_item, TYPICAL_COUNT),
            TableSpec(
                ALL_TYPES, TYPICAL_KEYS, all_types_item, ALL_TYPES_COUNT, gsis=[("by_sparse", [("sparse", "S")])]
            ),
        ]
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fast_dynamo(scan_server: ScanServer) -> Iterator[ScanServer]:
    """The session's ScanServer with no faults and zeroed counters; tables the test adds go away after it."""
    scan_server.reset_faults()
    scan_server.reset_stats()
    tables = set(scan_server.table_names())
    try:
        yield scan_server
    finally:
        scan_server.reset_faults()
        for name in set(scan_server.table_names()) - tables:
            scan_server.remove_table(name)


def migrate_cmd(dsn: str, endpoint: str, schemas: tuple[str, str], *args: str) -> list[str]:
    """`podyn-fast migrate` from the Scan server at ``endpoint`` into ``schemas`` (target, state);
    with ``--citus`` on a Citus coordinator (``PODYN_TEST_CITUS_DSN``), as every migrate of the suite."""
    return [
        PODYN, "migrate", "--postgres-url", dsn, "--endpoint-url", endpoint, "--region", "us-east-1",
        "--target-schema", schemas[0], "--state-schema", schemas[1], "--no-progress",
        *(["--citus"] if CITUS_DSN else []), *args,
    ]  # fmt: skip
