"""The test suite; a package so that conftest.py can name tests.fix_pg and tests.fix_dynamo as plugins."""
