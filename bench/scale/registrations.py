"""Watching the hosts register again in Redis after it lost its data (faults.py).

Every 0.25 s one pipeline: the hosts' own keys (``KEYS`` on their pattern), the members of
the fanout key, and ``INFO stats``; until every host's key is back. The commands/s series
leaves out the watch's own three commands per sample, so it shows the hosts' registration
load alone: a stampede is a tall narrow peak, spread registrations a low wide one.
"""

from __future__ import annotations

import time

import redis

from zmqdriver.addressing import rpc_key

PREFIX = "zmqdriver"  # zmq_matchmaker_prefix's default, which the harness keeps
EXCHANGE = "openstack"  # oslo.messaging's default control_exchange
EVERY = 0.25
OWN_COMMANDS = 3  # per sample: KEYS, ZCARD, INFO


class RegistrationWatch:
    def __init__(self, topic: str, hosts: int) -> None:
        self.hosts = hosts
        self.fanout_key = rpc_key(PREFIX, EXCHANGE, topic)
        self.pattern = f"{self.fanout_key}/host-*"  # rpc_key would quote the '*'

    def until_complete(self, client: redis.Redis, began: float, timeout: float) -> dict:
        """Samples from now until every host is registered (or ``timeout``), since ``began``.

        ``series``: [seconds since began, hosts registered, fanout members, commands/s].
        """
        series: list[list[float]] = []
        last: tuple[float, int] | None = None
        deadline = time.time() + timeout
        while time.time() < deadline:
            sample = self._sample(client)
            if sample is None:  # Redis not answering yet (a failover in progress)
                time.sleep(EVERY)
                continue
            now, registered, members, commands = sample
            rate = 0.0
            if last is not None and now > last[0]:
                rate = max(0, commands - last[1] - OWN_COMMANDS) / (now - last[0])
            last = (now, commands)
            series.append([round(now - began, 3), registered, members, round(rate, 1)])
            if registered >= self.hosts:
                break
            time.sleep(EVERY)
        return summarize(series, self.hosts)

    def _sample(self, client: redis.Redis) -> tuple[float, int, int, int] | None:
        try:
            pipe = client.pipeline(transaction=False)
            pipe.keys(self.pattern)
            pipe.zcard(self.fanout_key)
            pipe.info("stats")
            keys, members, stats = pipe.execute()
        except redis.RedisError:
            return None
        return time.time(), len(keys), members, stats["total_commands_processed"]


def summarize(series: list[list[float]], hosts: int) -> dict:
    """When all were back, when half were, the peak and mean registration commands/s.

    >>> summarize([[0.5, 0, 0, 0.0], [1.0, 40, 40, 800.0], [1.5, 100, 100, 1200.0]], 100)
    {'series': [[0.5, 0, 0, 0.0], [1.0, 40, 40, 800.0], [1.5, 100, 100, 1200.0]], \
'registered_s': 1.5, 'half_s': 1.5, 'first_s': 1.0, 'peak_ops': 1200.0}
    """
    done = [t for t, registered, _, _ in series if registered >= hosts]
    half = [t for t, registered, _, _ in series if registered >= hosts / 2]
    first = [t for t, registered, _, _ in series if registered > 0]
    return {
        "series": series,
        "registered_s": done[0] if done else None,
        "half_s": half[0] if half else None,
        "first_s": first[0] if first else None,
        "peak_ops": max((rate for *_, rate in series), default=None),
    }
