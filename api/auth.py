"""API keys and tenants, and the per-tenant rate limit on creating sessions.

Keys are configured by name as {tenant, sha256}; a request carries the key itself as
`Authorization: Bearer <key>` (or `X-API-Key`). The key's name is the actor on every event the
request causes. With no keys configured the server runs in dev mode — every request acts as
`dev` in tenant `default` — which `stepline serve` allows only on a loopback address.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass

from api.errors import ApiError
from engine.settings import ApiKey

DEV = "dev"
DEV_TENANT = "default"


@dataclass(frozen=True)
class Caller:
    name: str
    tenant: str


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh random key and its SHA-256, for `stepline keys new`."""
    key = f"sk_{secrets.token_urlsafe(32)}"
    return key, digest(key)


class KeyRing:
    def __init__(self, keys: dict[str, ApiKey]) -> None:
        self._by_digest = {k.sha256: Caller(name, k.tenant) for name, k in keys.items()}

    @property
    def dev_mode(self) -> bool:
        return not self._by_digest

    def caller(self, authorization: str | None, api_key: str | None) -> Caller:
        if self.dev_mode:
            return Caller(DEV, DEV_TENANT)
        token = api_key
        if authorization and authorization.lower().startswith("bearer "):
            token = authorization[7:].strip()
        # A dict lookup on the key's SHA-256: timing reveals nothing about the key itself.
        found = self._by_digest.get(digest(token)) if token else None
        if found is None:
            raise ApiError.of(
                "UNAUTHORIZED",
                "a valid API key is required" if token else "no API key was sent",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return found


class RateLimiter:
    """A token bucket per tenant, refilled continuously (per process)."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, tenant: str, count: int = 1) -> None:
        with self._lock:
            now = time.monotonic()
            tokens, at = self._buckets.get(tenant, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - at) * self.rate)
            if tokens < count:
                wait_s = max(1, int((count - tokens) / self.rate) + 1)
                self._buckets[tenant] = (tokens, now)
                raise ApiError.of(
                    "RATE_LIMITED",
                    f"tenant {tenant} may create {int(self.capacity)} sessions a minute",
                    headers={"Retry-After": str(wait_s)},
                )
            self._buckets[tenant] = (tokens - count, now)
