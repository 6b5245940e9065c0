"""API keys and tenants, and the per-tenant rate limit on creating sessions.

Keys are configured by name as {tenant, sha256}; a request carries the key itself as
`Authorization: Bearer <key>` (or `X-API-Key`). The key's name is the actor on every event the
request causes. With no keys configured the server runs in dev mode — every request acts as
`dev` in tenant `default` — which `stepline serve` allows only on a loopback address.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from psycopg_pool import ConnectionPool

from api.errors import ApiError
from engine.quotas import CreationQuota
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
    """Each tenant's rate of creating sessions, shared by every API process."""

    def __init__(self, pool: ConnectionPool, per_minute: int) -> None:
        self.quota = CreationQuota(pool, per_minute)
        self.quota.prepare()

    def take(self, tenant: str, count: int = 1) -> None:
        wait_s = self.quota.take(tenant, count)
        if wait_s is not None:
            raise ApiError.of(
                "RATE_LIMITED",
                f"tenant {tenant} may create {int(self.quota.capacity)} sessions a minute",
                headers={"Retry-After": str(max(1, int(wait_s) + 1))},
            )
