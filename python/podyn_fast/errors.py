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


class BodyChecksumError(PodynError, Transient):
    """A response body does not match its ``x-amz-crc32`` header: it was damaged on the way."""


class MigrateError(PodynError, Terminal):
    """A load cannot go on; the message says what to do."""


class LeaseLost(PodynError, Transient):
    """Another worker took over this segment (our lease expired): our uncommitted rows are dropped."""


class FollowError(PodynError, Terminal):
    """Following cannot start or go on; the message says what to do."""


class ExportError(PodynError, Terminal):
    """A DynamoDB export in S3 that cannot be loaded as it is: not an export's folder, a format
    other than DYNAMODB_JSON, manifests that disagree, a damaged data file."""


class Gap(PodynError, Terminal):
    """Changes were lost to the follower (trimmed records, a vanished shard, a new stream)."""


class VerifyError(PodynError, Terminal):
    """Verification cannot run; the message says why."""


class NoState(PodynError, Terminal):
    """The state schema does not exist: nothing was migrated with it."""

    def __init__(self, schema: str) -> None:
        super().__init__(schema)
        self.schema = schema

    def __str__(self) -> str:
        return (
            f"no podyn-fast state in schema {self.schema!r} of this database (nothing was migrated here with it): "
            f"run migrate first, or pass the --state-schema it used"
        )


class DemoError(PodynError, Terminal):
    """The demo could not run; the message says why."""


class EmulatorError(PodynError, Terminal, RuntimeError):
    """The emulator is not installed or did not start."""


class UnsupportedDatabase(PodynError, Terminal):
    """The target database cannot hold what podyn-fast writes (its encoding); the message says why."""


class Interrupted(PodynError, Terminal):
    """A signal (SIGTERM) asked the command to stop."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
