"""Registers the shared fixtures: PostgreSQL (fix_pg) and a DynamoDB emulator over HTTP (fix_dynamo)."""

pytest_plugins = ["tests.fix_pg", "tests.fix_dynamo", "tests.fix_scan_server", "tests.fix_streams_server"]
