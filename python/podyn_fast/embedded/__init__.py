"""Throw-away servers that tests, benchmarks and the demo start for themselves."""
