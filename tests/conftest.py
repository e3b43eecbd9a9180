"""Registers the shared fixtures: PostgreSQL (fix_pg), DynamoDB over HTTP (fix_dynamo, and our own
Scan and Streams servers), and the `migrate` runner on moto (moto_migrate)."""

pytest_plugins = [
    "tests.fix_pg",
    "tests.fix_dynamo",
    # Before fix_scan_server, which imports it (a plugin imported first is not assertion-rewritten).
    "tests.moto_migrate",
    "tests.fix_scan_server",
    "tests.fix_streams_server",
]
