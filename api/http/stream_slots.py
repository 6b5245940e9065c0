"""Caps on live SSE streams: per API key and per tenant, counted in this process.

A stream takes a slot before its response starts and gives it back when the response ends,
however it ends (the session ended, the client closed it or vanished, the server stops). The
counts are per API process: behind N replicas a key may hold up to N times its cap.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

from api.http.auth import Caller
from api.http.errors import ApiError

RETRY_AFTER_S = 5
"""A slot frees when a stream ends, which nobody can foretell: try again in a few seconds."""


@dataclass
class StreamSlot:
    """One open stream's place under the caps; `release` is safe to call more than once."""

    slots: StreamSlots
    caller: Caller
    released: bool = field(default=False)

    def release(self) -> None:
        self.slots.release(self)


class StreamSlots:
    def __init__(self) -> None:
        self._by_key: Counter[str] = Counter()
        self._by_tenant: Counter[str] = Counter()
        self._lock = threading.Lock()

    def open(self, caller: Caller, key_cap: int | None, tenant_cap: int | None) -> StreamSlot:
        """A slot for one more stream of `caller`, or 429 naming the cap it would pass."""
        key, tenant = caller.name, caller.tenant
        with self._lock:
            for cap, held, holder, setting in (
                (key_cap, self._by_key[key], f"the key {key}", "key_max_streams"),
                (tenant_cap, self._by_tenant[tenant], f"the tenant {tenant}", "max_streams"),
            ):
                if cap is not None and held >= cap:
                    raise _over(cap, holder, setting)
            self._by_key[key] += 1
            self._by_tenant[tenant] += 1
        return StreamSlot(self, caller)

    def release(self, slot: StreamSlot) -> None:
        with self._lock:
            if slot.released:
                return
            slot.released = True
            self._by_key[slot.caller.name] -= 1
            self._by_tenant[slot.caller.tenant] -= 1


def _over(cap: int, holder: str, setting: str) -> ApiError:
    return ApiError.of(
        "STREAM_LIMIT_EXCEEDED",
        f"{holder} already has {cap} live streams open, its cap ({setting})",
        headers={"Retry-After": str(RETRY_AFTER_S)},
        limit=setting,
        cap=cap,
    )
