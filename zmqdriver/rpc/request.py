"""What calls and casts share: an addressed, encoded message and its resend budget."""

from __future__ import annotations

from dataclasses import dataclass, field

from oslo_messaging import Target

from zmqdriver.addressing import Endpoint


@dataclass(eq=False)
class Request:
    """One message on its way to a server of ``target``.

    It is encoded once; every resend sends the same ``frames`` with the same
    ``msg_id``, so a server that already has it can drop the copy.
    """

    target: Target
    key: str  # the matchmaker key of its servers
    msg_id: bytes
    frames: list[bytes]
    retry: int | None = None  # oslo's retry: None or -1 no limit, N at most N resends
    attempts: int = 0  # how many times it was sent
    tried: set[Endpoint] = field(default_factory=set)  # servers that failed it

    def out_of_retries(self) -> bool:
        """More sends than ``retry`` allows have failed."""
        return self.retry is not None and 0 <= self.retry < self.attempts
