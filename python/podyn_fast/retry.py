"""One retry policy: which failures are worth another try, and how long to wait before it.

Every loop that waits on an error takes its delays from a ``Backoff`` and its verdicts from
``aws_failure``; botocore's own retries (standard mode) come first, so what reaches these loops
has failed several times already.
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass

from botocore.exceptions import ClientError, HTTPClientError, IncompleteReadError
from botocore.exceptions import ConnectionError as BotoConnectionError

from podyn_fast.errors import BodyChecksumError

# What DynamoDB, DynamoDB Streams and S3 (SlowDown, a 503) answer when asked too fast.
THROTTLING = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "LimitExceededException",
        "SlowDown",
    }
)
# How long a failing request is tried again before the error is reported: throttling passes when
# the table's capacity allows; server errors and a network that fail for minutes will not.
THROTTLED_FOR = 600.0
FAILING_FOR = 120.0

# Failures of the network, whatever the call: refused, dropped or timed out connections, a body cut
# short (IncompleteReadError: an S3 object's body that ended before its Content-Length).
_NETWORK = (HTTPClientError, BotoConnectionError, IncompleteReadError, BodyChecksumError)
# The failures of an AWS call that aws_failure judges.
AWS_FAILURES = (ClientError, *_NETWORK)


@dataclass(frozen=True)
class Failure:
    """What a failed AWS call tells."""

    transient: bool
    """Asking again later may succeed."""
    throttled: bool
    why: str

    @property
    def give_up_after(self) -> float:
        return THROTTLED_FOR if self.throttled else FAILING_FOR


def aws_failure(e: BaseException) -> Failure:
    """The verdict on ``e``, raised by an AWS call: throttling, a server error (5xx), a damaged
    body or the network (timeouts, refused or dropped connections) are transient; the rest (a
    missing table, a denied permission, a bad request) is not."""
    if isinstance(e, ClientError):
        code = str(e.response.get("Error", {}).get("Code"))
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        throttled = code in THROTTLING
        return Failure(throttled or status >= 500, throttled, code)
    if isinstance(e, _NETWORK):
        return Failure(True, False, type(e).__name__)
    return Failure(False, False, type(e).__name__)


# A generator of our own: the jitter leaves the `random` module's global state, which the program
# embedding us may have seeded, alone. Reseeded in a forked child (a forked migrate worker), or
# every worker would draw the same delays and come back together with its siblings.
_jitter = random.Random()  # noqa: S311  (jitter, not a secret)
os.register_at_fork(after_in_child=_jitter.seed)


class Backoff:
    """Exponential backoff with full jitter: the n-th delay is drawn from [0, min(cap, base·2ⁿ)],
    so that many clients failing together do not come back together."""

    def __init__(self, base: float, cap: float, *, jitter: bool = True) -> None:
        self.base, self.cap, self.jitter = base, cap, jitter
        self.attempts = 0
        self.started = time.monotonic()

    def delay(self) -> float:
        """The next delay (and one attempt more)."""
        self.attempts += 1
        # The exponent stops growing long after the cap is reached: 2.0**1100 would overflow.
        ceiling = min(self.cap, self.base * 2.0 ** min(self.attempts, 60))
        return _jitter.uniform(0, ceiling) if self.jitter else ceiling

    def sleep(self, stop: threading.Event | None = None) -> bool:
        """Wait the next delay; True when ``stop`` was set meanwhile."""
        seconds = self.delay()
        if stop is None:
            time.sleep(seconds)
            return False
        return stop.wait(seconds)

    def failing_for(self) -> float:
        """Seconds since the first failure (since this backoff was made or last reset)."""
        return time.monotonic() - self.started

    def reset(self) -> None:
        """After a success: the next failure starts from the first delay again."""
        self.attempts = 0
        self.started = time.monotonic()
