"""The exception tree of podyn-fast; the Rust core raises these too (by import)."""

from __future__ import annotations

from typing import Any


class PodynError(Exception):
    """Root of every error podyn-fast raises on purpose."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Survive the trip back from a worker process with constructor arguments intact.
        return type(self).__new__, (type(self), *self.args), self.__dict__


class Transient:
    """Marker: retrying the same operation later may succeed."""


class Terminal:
    """Marker: retrying cannot help; the user must act."""


class BodyError(PodynError, Terminal, ValueError):
    """A DynamoDB response body could not be read (invalid JSON, truncated, or not the expected kind)."""


class DynamoServiceError(PodynError, Terminal):
    """DynamoDB answered with an error document instead of a result."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"DynamoDB error {self.code}: {self.message}"


class LayoutError(PodynError, Terminal, ValueError):
    """A table layout is inconsistent (unknown type, a key without its column, duplicate names)."""
