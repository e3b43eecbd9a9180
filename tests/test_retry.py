"""The one retry policy: its verdicts on AWS failures and its delays."""

from __future__ import annotations

import os
import random

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from podyn_fast import retry
from podyn_fast.errors import BodyChecksumError


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


@pytest.mark.parametrize(
    ("error", "transient", "throttled"),
    [
        (_client_error("ProvisionedThroughputExceededException", 400), True, True),
        (_client_error("ThrottlingException", 400), True, True),
        (_client_error("RequestLimitExceeded", 400), True, True),
        (_client_error("LimitExceededException", 400), True, True),  # GetRecords' throttle
        (_client_error("InternalServerError", 500), True, False),
        (_client_error("ResourceNotFoundException", 400), False, False),
        (_client_error("AccessDeniedException", 400), False, False),
        (EndpointConnectionError(endpoint_url="http://x"), True, False),
        (ReadTimeoutError(endpoint_url="http://x"), True, False),
        (BodyChecksumError("damaged"), True, False),
        (ValueError("a bug"), False, False),
    ],
)
def test_verdicts(error: BaseException, transient: bool, throttled: bool) -> None:
    failure = retry.aws_failure(error)
    assert (failure.transient, failure.throttled) == (transient, throttled)
    assert failure.give_up_after == (retry.THROTTLED_FOR if throttled else retry.FAILING_FOR)


def test_delays_grow_to_the_cap_and_stay_there() -> None:
    backoff = retry.Backoff(0.5, 10.0, jitter=False)
    assert [backoff.delay() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    for _ in range(5000):  # hours of failing (2 ** 5000 would overflow a float)
        assert 0 <= backoff.delay() <= 10.0
    backoff.reset()
    assert backoff.delay() == 1.0


def test_jitter_stays_below_each_ceiling() -> None:
    backoff = retry.Backoff(0.5, 10.0)
    for ceiling in (1.0, 2.0, 4.0, 8.0, 10.0):
        assert 0 <= backoff.delay() <= ceiling


def test_jitter_leaves_the_random_modules_state_alone() -> None:
    before = random.getstate()
    backoff = retry.Backoff(0.5, 10.0)
    assert all(0 <= backoff.delay() <= 10.0 for _ in range(20))
    assert random.getstate() == before


def test_forked_children_draw_delays_of_their_own() -> None:
    """migrate forks its workers: with one generator state for all of them, workers failing
    together would come back together, which jitter is there to prevent."""

    def first_delays() -> list[float]:
        backoff = retry.Backoff(0.5, 10.0)
        return [backoff.delay() for _ in range(4)]

    children = []
    for _ in range(2):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: write its delays and leave at once, running nothing of pytest's
            os.close(read)
            os.write(write, repr(first_delays()).encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as f:
            children.append(f.read())
        os.waitpid(pid, 0)
    assert children[0] != children[1], "two forked children drew the same delays"
    assert repr(first_delays()).encode() not in children
