"""API keys and tenants, the operator's metrics key, and the rates that hold them back.

Keys are configured by name as {tenant, sha256}; a request carries the key itself as
`Authorization: Bearer <key>` (or `X-API-Key`). The key's name is the actor on every event the
request causes. With no keys configured the server runs in dev mode — every request acts as
`dev` in tenant `default` — which `stepline serve` allows only on a loopback address.

Rates: each key's requests a minute (its tenant's policy) and each tenant's session creations
(within the server's room for sessions) are token buckets in PostgreSQL, shared by every API
process; failed authentications are counted per client address in each process, so a guesser
is stopped after a few tries.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from psycopg_pool import ConnectionPool

from api.http.errors import ApiError
from domain.dev_mode import DEV_ACTOR, DEV_TENANT
from engine.settings import ApiKey
from engine.tenancy.policies import Policies
from engine.tenancy.quotas import (
    Admission,
    Capacity,
    CreationQuota,
    Creations,
    Refused,
    RequestQuota,
)

T = TypeVar("T")


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


def sent_key(authorization: str | None, api_key: str | None) -> str | None:
    """The key a request carries: `Authorization: Bearer <key>`, else `X-API-Key`."""
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return api_key


class KeyRing:
    def __init__(self, keys: dict[str, ApiKey], operator_sha256: str | None = None) -> None:
        self._by_digest = {k.sha256: Caller(name, k.tenant) for name, k in keys.items()}
        self._operator_sha256 = operator_sha256

    @property
    def dev_mode(self) -> bool:
        return not self._by_digest

    def is_operator(self, authorization: str | None, api_key: str | None) -> bool:
        """Whether the request carries the operator's metrics key (never a tenant's)."""
        token = sent_key(authorization, api_key)
        if not token or self._operator_sha256 is None:
            return False
        return hmac.compare_digest(digest(token), self._operator_sha256)

    def caller(self, authorization: str | None, api_key: str | None) -> Caller:
        if self.dev_mode:
            return Caller(DEV_ACTOR, DEV_TENANT)
        token = sent_key(authorization, api_key)
        # A dict lookup on the key's SHA-256: timing reveals nothing about the key itself.
        found = self._by_digest.get(digest(token)) if token else None
        if found is None:
            raise ApiError.of(
                "UNAUTHORIZED",
                "a valid API key is required" if token else "no API key was sent",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return found


class CreationLimiter:
    """The server's room for sessions and each tenant's rate of creating them, shared by every
    API process and decided in one statement: a creation refused for room costs no token."""

    def __init__(self, pool: ConnectionPool, per_minute: int, capacity: Capacity) -> None:
        self.quota = CreationQuota(pool, per_minute, capacity)

    def take(self, tenant: str, count: int = 1) -> None:
        """Go on only if `count` more sessions fit and the tenant has the tokens for them."""
        creations = self.quota.take(tenant, count)
        if creations.full or creations.wait_s is not None:
            raise self.refusal(tenant, creations)

    def created(self, tenant: str, count: int, save: Callable[[Admission], T]) -> T:
        """What `save` gives, having saved `count` new sessions only if they fit and the
        tenant has the tokens for them: decided in the statement that saves them (the
        admission `save` is handed), refused as `take` refuses, nothing saved."""
        try:
            return self.quota.admitted(tenant, count, save)
        except Refused as refused:
            raise self.refusal(tenant, refused.creations) from None

    def refusal(self, tenant: str, creations: Creations) -> ApiError:
        """429: no room for the sessions (no token taken), or the tenant's rate spent."""
        if creations.full:
            limit = self.quota.capacity.limit
            return ApiError.of(
                "CONCURRENT_LIMIT_EXCEEDED",
                f"{creations.active} sessions are pending or running; the limit is {limit}",
                headers={"Retry-After": "5"},
                active=creations.active,
                limit=limit,
            )
        return ApiError.of(
            "RATE_LIMITED",
            f"tenant {tenant} may create {int(self.quota.per_minute)} sessions a minute",
            headers={"Retry-After": str(max(1, int(creations.wait_s or 0) + 1))},
        )


class RequestLimiter:
    """Each key's requests a minute, at its tenant's `requests_per_minute` (None: no cap),
    shared by every API process (see `RequestQuota`: most requests make no round trip)."""

    def __init__(self, pool: ConnectionPool, policies: Policies) -> None:
        self.quota = RequestQuota(pool)
        self.policies = policies

    def take_held(self, caller: Caller) -> bool:
        """Let the request through without a query if this process can: its tenant's policy
        read lately, and no cap or a token of the key held here (spent). False: only `take`
        can decide, and it may query."""
        policy = self.policies.cached(caller.tenant)
        if policy is None:
            return False
        return policy.requests_per_minute is None or self.quota.take_held(caller.name)

    def take(self, caller: Caller) -> None:
        per_minute = self.policies.of(caller.tenant).requests_per_minute
        if per_minute is None:
            return
        wait_s = self.quota.take(caller.name, per_minute)
        if wait_s is not None:
            raise ApiError.of(
                "KEY_RATE_LIMITED",
                f"the key {caller.name} may make {per_minute} requests a minute",
                headers={"Retry-After": str(max(1, int(wait_s) + 1))},
                limit="requests_per_minute",
                per_minute=per_minute,
            )


class AuthFailures:
    """Failed authentications per client address over the last minute, in this process.

    An address with `per_minute` failures in the last minute is refused — even with a valid
    key — until the oldest of them is a minute old. Addresses are forgotten once quiet; at
    most `max_addresses` are remembered (the least recently failing are dropped first)."""

    WINDOW_S = 60.0

    def __init__(self, per_minute: int, max_addresses: int = 10_000) -> None:
        self.per_minute = per_minute
        self.max_addresses = max_addresses
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def refuse_if_blocked(self, address: str) -> None:
        wait_s = self._blocked_for(address)
        if wait_s is not None:
            raise ApiError.of(
                "TOO_MANY_AUTH_FAILURES",
                f"{self.per_minute} failed authentications from {address} in a minute",
                headers={"Retry-After": str(max(1, int(wait_s) + 1))},
                limit="auth_failures_per_minute",
                per_minute=self.per_minute,
            )

    def record(self, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            failures = self._failures.pop(address, None)
            if failures is None:
                self._make_room(now)
                failures = deque(maxlen=self.per_minute)
            failures.append(now)
            self._failures[address] = failures  # last in the order: the most recent

    def _blocked_for(self, address: str) -> float | None:
        with self._lock:
            failures = self._failures.get(address)
            if failures is None or len(failures) < self.per_minute:
                return None
            left = failures[0] + self.WINDOW_S - time.monotonic()
        return left if left > 0 else None

    def _make_room(self, now: float) -> None:
        if len(self._failures) < self.max_addresses:
            return
        quiet = [a for a, f in self._failures.items() if f[-1] + self.WINDOW_S <= now]
        for address in quiet:
            del self._failures[address]
        while len(self._failures) >= self.max_addresses:
            del self._failures[next(iter(self._failures))]
