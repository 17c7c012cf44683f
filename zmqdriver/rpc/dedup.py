"""Bounded memory of recently seen message ids, for dropping resent duplicates."""

from __future__ import annotations

import collections


class RecentIds:
    """Remembers the last ``capacity`` ids added, with a value each (oldest forgotten first)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._ids: collections.OrderedDict[bytes, object] = collections.OrderedDict()

    def __contains__(self, msg_id: bytes) -> bool:
        return msg_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def pop(self, msg_id: bytes) -> object:
        """Forget ``msg_id``; returns its value (None if unknown)."""
        return self._ids.pop(msg_id, None)

    def add(self, msg_id: bytes, value: object = None) -> None:
        if self._capacity <= 0:
            return
        self._ids[msg_id] = value
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)
