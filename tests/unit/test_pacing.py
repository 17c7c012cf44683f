"""The one throttle and the one backoff of the package."""

import math

import pytest

from zmqdriver.backoff import Backoff, call_with_retry
from zmqdriver.throttle import Throttle


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_throttle_admits_once_per_period_and_counts_the_rest():
    clock = Clock()
    throttle = Throttle(every=10.0, clock=clock)
    assert throttle.admit("a") == 0
    assert throttle.admit("a") is None
    assert throttle.admit("b") == 0  # keys have their own budget
    clock.now = 9.9
    assert throttle.admit("a") is None
    clock.now = 10.0
    assert throttle.admit("a") == 2


def test_throttle_forget_admits_the_next_event_at_once():
    throttle = Throttle(every=math.inf, clock=Clock())
    assert throttle.admit("server") == 0
    assert throttle.admit("server") is None
    throttle.forget("server")
    assert throttle.admit("server") == 0


def test_throttle_memory_is_bounded():
    throttle = Throttle(every=math.inf, max_keys=3, clock=Clock())
    for key in range(3):
        assert throttle.admit(key) == 0
    assert throttle.admit(3) == 0  # the table was full: it starts afresh
    assert throttle.admit(0) == 0
    assert throttle.admit(3) is None


def test_backoff_grows_to_its_maximum():
    delays = Backoff(1.0, 5.0, factor=3.0).delays()
    assert [next(delays) for _ in range(4)] == [1.0, 3.0, 5.0, 5.0]


def test_call_with_retry_retries_the_listed_errors_with_growing_pauses():
    attempts, pauses, told = [], [], []

    def flaky():
        attempts.append(1)
        if len(attempts) < 4:
            raise ConnectionError("down")
        return "stored"

    result = call_with_retry(
        flaky,
        retry_on=(ConnectionError,),
        backoff=Backoff(0.1, 0.3),
        retries=None,
        on_retry=lambda error, delay: told.append((str(error), delay)),
        sleep=pauses.append,
    )
    assert result == "stored"
    assert pauses == [0.1, 0.2, 0.3]
    assert told == [("down", 0.1), ("down", 0.2), ("down", 0.3)]


@pytest.mark.parametrize("retries, calls", [(0, 1), (2, 3)])
def test_call_with_retry_raises_the_last_error_when_retries_are_spent(retries, calls):
    attempts = []

    def failing():
        attempts.append(1)
        raise ConnectionError(f"attempt {len(attempts)}")

    with pytest.raises(ConnectionError, match=f"attempt {calls}"):
        call_with_retry(
            failing,
            retry_on=(ConnectionError,),
            backoff=Backoff(0.1, 1.0),
            retries=retries,
            sleep=lambda delay: None,
        )
    assert len(attempts) == calls


def test_call_with_retry_passes_other_errors_through_at_once():
    attempts = []

    def refused():
        attempts.append(1)
        raise PermissionError("wrong password")

    with pytest.raises(PermissionError):
        call_with_retry(
            refused, retry_on=(ConnectionError,), backoff=Backoff(0.1, 1.0), retries=None
        )
    assert len(attempts) == 1
