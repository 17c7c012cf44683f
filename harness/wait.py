"""Waiting for a condition: poll it, never sleep a fixed time and hope."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition did not hold in time; an AssertionError, so a test reports it as a failure."""


def eventually(
    condition: Callable[[], T], timeout: float, poll: float = 0.05, max_poll: float | None = None
) -> T | None:
    """The first truthy value ``condition()`` returns, or None once ``timeout`` seconds passed.

    The pause between polls starts at ``poll`` and doubles up to ``max_poll`` (by default it
    stays ``poll``).

    >>> eventually(lambda: 42, timeout=1.0)
    42
    >>> eventually(lambda: [], timeout=0.0) is None
    True
    """
    deadline = time.monotonic() + timeout
    pause, longest = poll, max(poll, max_poll or poll)
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            return None
        time.sleep(pause)
        pause = min(pause * 2, longest)


def wait_until(
    condition: Callable[[], T],
    timeout: float = 30.0,
    what: str = "",
    poll: float = 0.05,
    max_poll: float | None = None,
) -> T:
    """Like :func:`eventually`, but WaitTimeout naming ``what`` instead of None."""
    result = eventually(condition, timeout, poll, max_poll)
    if not result:
        raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what or condition}")
    return result
