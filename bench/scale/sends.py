"""What the API's log says it sent to killed hosts (the ``hosts`` fault on zmq://).

The API runs with ``zmqdriver.rpc.casts`` at DEBUG (``api.py --log-sends``): every cast or
fanout copy the driver sent to a server and lost is one line naming the server's endpoint
(``Server tcp://127.1.0.3:41234 of fanout ... was lost``; the first per outage is a WARNING).
The last such line for a killed host's address is when the API stopped sending to it.
Lines that say a copy was *not* sent (``Fanout skips ...``, ``... not sent to ...``) are
not counted.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

# "2026-12-06 06:16:01,123 DEBUG zmqdriver.rpc.casts: Server tcp://127.1.0.3:41234 of ..."
LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ zmqdriver\.rpc\.casts: .*?"
    r"tcp://(127\.1\.\d+\.\d+):\d+"
)
NOT_SENT = re.compile(r"Fanout skips |not sent to ")


def line_time(stamp: str) -> float:
    """``logging``'s asctime (local time) as a ``time.time()`` value."""
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def sends_to(log: Path, addresses: set[str], since: float, until: float) -> dict:
    """Lines naming ``addresses`` between ``since`` and ``until``: how many, the last one's time.

    >>> import tempfile, os
    >>> path = Path(tempfile.mkdtemp()) / "api.log"
    >>> _ = path.write_text(
    ...     "2026-12-06 06:16:01,500 DEBUG zmqdriver.rpc.casts: Server tcp://127.1.0.3:41 of x\\n"
    ...     "2026-12-06 06:16:09,250 DEBUG zmqdriver.rpc.casts: Server tcp://127.1.0.3:41 of y\\n"
    ...     "2026-12-06 06:16:09,900 DEBUG zmqdriver.rpc.casts: Server tcp://127.1.0.9:41 of z\\n"
    ...     "2026-12-06 06:16:09,950 WARNING zmqdriver.rpc.casts: Fanout skips tcp://127.1.0.3:41\\n")
    >>> t0 = line_time("2026-12-06 06:16:01,000")
    >>> found = sends_to(path, {"127.1.0.3"}, t0, t0 + 60)
    >>> found["lines"], round(found["last"] - t0, 2)
    (2, 8.25)
    """
    count, last = 0, None
    for text in log.read_text(errors="replace").splitlines():
        match = LINE.match(text)
        if not match or match.group(2) not in addresses or NOT_SENT.search(text):
            continue
        at = line_time(match.group(1))
        if since <= at <= until:
            count += 1
            last = at
    return {"lines": count, "last": last}
