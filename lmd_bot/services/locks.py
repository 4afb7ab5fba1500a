"""One asyncio lock per key (a scene, a grid): requests on the same thing take turns."""

from __future__ import annotations

import asyncio
import weakref


class KeyedLocks:
    """``locks(key)``: the lock of ``key``, made on first use and forgotten once nobody holds or
    waits on it (the dictionary keeps no lock alive), so the map never grows with old keys."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()

    def __call__(self, key: int) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock
