"""Bounded memory of recently seen message ids, for dropping resent duplicates."""

from __future__ import annotations

import collections


class RecentIds:
    """Remembers the last ``capacity`` ids added (oldest forgotten first)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._ids: collections.OrderedDict[bytes, None] = collections.OrderedDict()

    def __contains__(self, msg_id: bytes) -> bool:
        return msg_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, msg_id: bytes) -> None:
        if self._capacity <= 0:
            return
        self._ids[msg_id] = None
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)
