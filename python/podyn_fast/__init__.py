"""podyn-fast: move DynamoDB tables into PostgreSQL fast, and keep them in sync until cutover."""

from podyn_fast._core import __version__

__all__ = ["__version__"]
