"""Secrets: `{{secrets.NAME}}` placeholders, filled in only at the moment an executor runs a
command, only for a destination the secret may go to, and redacted (in their common encodings
too) from everything recorded, logged or prompted.

A session's secrets are its tenant's stored ones (`engine.tenancy.secret_store`), each bound to the
origins it may be sent to, and, for the dev-mode tenant only, the `STEPLINE_SECRET_NAME`
variables (and `STEPLINE_TOTP_NAME` seeds), which may go anywhere (the local convenience they
always were).

A secret may instead be a TOTP seed (stored with kind `totp`): `{{totp.NAME}}` is then its
current one-time code (RFC 6238, computed with pyotp the moment the command is filled in),
and the seed itself is never sent (`{{secrets.NAME}}` of a seed is refused). The seed is
redacted like any value; each code filled in is redacted too, for the rest of the run, but
only where it stands as a number of its own (not inside a longer run of digits), and not in
its encodings: a six-digit code expires within a minute, while redacting every encoding of six
digits would rewrite unrelated numbers all over recorded outputs.

A destination is an origin (`https://api.example.com`, `http://127.0.0.1:8080`), or `shell`
for a shell command: it has no network, but its output is recorded, so a stored secret reaches
a shell only when `shell` is among its origins.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import quote, quote_plus, urlsplit

import pyotp

from domain.errors import DomainError

PREFIX = "STEPLINE_SECRET_"
TOTP_PREFIX = "STEPLINE_TOTP_"
NAME = re.compile(r"^[A-Za-z0-9_]{1,100}$")
PLACEHOLDER = re.compile(r"\{\{\s*secrets\.([A-Za-z0-9_]+)\s*\}\}")
TOTP = "totp"
"""The namespace of one-time codes: `{{totp.NAME}}` is the current code of seed NAME."""
FILLED = re.compile(r"\{\{\s*(secrets|totp)\.([A-Za-z0-9_]+)\s*\}\}")
"""Every placeholder an executor fills in: a secret's value or a seed's current code."""
MIN_SEED_CHARS = 16  # 80 bits, the shortest seed authenticator apps are commonly given
MIN_REDACTED_LENGTH = 4  # shorter values would redact ordinary text everywhere
ANY_ORIGIN = "*"
"""Only the dev tenant's environment secrets carry it; a stored secret never does."""
SHELL = "shell"
NO_ORIGIN = "null"
"""What a URL without an origin of its own (about:blank, a relative URL) goes to: no secret."""
_DEFAULT_PORTS = {"http": 80, "https": 443}


def placeholder(name: str) -> str:
    return f"{{{{secrets.{name}}}}}"


def totp_placeholder(name: str) -> str:
    return f"{{{{totp.{name}}}}}"


def normalized_seed(text: str) -> str:
    """A TOTP seed as pyotp reads it: base32, upper case, without the spaces and dashes
    sites print it with; ValueError (never repeating the seed) for anything else."""
    seed = re.sub(r"[\s-]", "", text).upper().rstrip("=")
    try:
        decoded = base64.b32decode(seed + "=" * (-len(seed) % 8))
    except (binascii.Error, ValueError):
        decoded = b""
    if not decoded or len(seed) < MIN_SEED_CHARS:
        raise ValueError(
            f"a TOTP seed is base32 (letters A-Z and digits 2-7, at least {MIN_SEED_CHARS} "
            "of them), as a site shows it under its QR code; this value is not one"
        )
    return seed


def origin_of(url: str) -> str:
    """`scheme://host[:port]` as browsers spell an origin (lower case, default port left
    out), or NO_ORIGIN for anything that is not an absolute http(s) URL. A backslash reads as
    a slash, as browsers read it: `http://evil\\@good/` goes to evil."""
    parts = urlsplit(url.replace("\\", "/"))
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in _DEFAULT_PORTS or not host:
        return NO_ORIGIN
    try:
        port = parts.port
    except ValueError:
        return NO_ORIGIN
    host = f"[{host}]" if ":" in host else host
    shown_port = "" if port in (None, _DEFAULT_PORTS[scheme]) else f":{port}"
    return f"{scheme}://{host}{shown_port}"


def normalized_origin(text: str) -> str:
    """An origin a secret may be bound to, as `origin_of` spells it; ValueError otherwise."""
    if text == SHELL:
        return SHELL
    parts = urlsplit(text)
    extra = parts.username or parts.password or parts.query or parts.fragment
    origin = origin_of(text)
    if origin == NO_ORIGIN or extra or parts.path not in ("", "/"):
        raise ValueError(
            f"{text!r} is not an origin: write scheme://host[:port], e.g. "
            f"https://api.example.com, or {SHELL!r} for shell commands"
        )
    return origin


class SecretUnusable(DomainError):
    """A placeholder that cannot be filled for where the command sends it."""


class SecretNotFound(SecretUnusable):
    code = "SECRET_NOT_FOUND"

    def __init__(self, name: str, *, totp: bool = False) -> None:
        how = (
            f"store its seed with `stepline secrets set {name} --totp` or PUT "
            f'/v1/secrets/{name} with "kind": "totp" (dev mode: or set {TOTP_PREFIX}{name})'
            if totp
            else f"store it with `stepline secrets set {name}` or PUT /v1/secrets/{name} (dev "
            f"mode: or set {PREFIX}{name})"
        )
        super().__init__(f"secret {name} is not set for this tenant; {how}", name=name)


class SecretKindMismatch(SecretUnusable):
    """A seed used as a value (which would send the seed itself), or a value used as a seed."""

    code = "SECRET_KIND_MISMATCH"

    def __init__(self, name: str, *, seed: bool) -> None:
        message = (
            f"secret {name} is a TOTP seed: write {{{{totp.{name}}}}} for its current code "
            "(the seed itself is never sent)"
            if seed
            else f"secret {name} is not a TOTP seed: write {{{{secrets.{name}}}}}, or store the "
            f"seed with `stepline secrets set {name} --totp`"
        )
        super().__init__(message, name=name)


class UnreadableSeed(DomainError):
    code = "CONFIGURATION_INVALID"


def _seed_of(variable: str, text: str) -> str:
    try:
        return normalized_seed(text)
    except ValueError as error:
        raise UnreadableSeed(f"{variable}: {error}") from None


class SecretOriginRefused(SecretUnusable):
    code = "SECRET_ORIGIN_REFUSED"

    @classmethod
    def sending(cls, name: str, destination: str, origins: tuple[str, ...]) -> Self:
        return cls(
            f"secret {name} may only be sent to {', '.join(origins) or 'no origin'}, not to "
            f"{destination}; nothing was sent",
            name=name,
            destination=destination,
            allowed_origins=list(origins),
        )

    @classmethod
    def redirected(cls, destination: str, origins: frozenset[str]) -> Self:
        return cls(
            f"the response redirects to {destination}, but the secrets the request carries may "
            f"only go to {', '.join(sorted(origins))}; the redirect was not followed",
            destination=destination,
            allowed_origins=sorted(origins),
        )


@dataclass(frozen=True)
class Secret:
    name: str
    value: str = field(repr=False)
    origins: tuple[str, ...] = (ANY_ORIGIN,)
    totp: bool = False
    """The value is a TOTP seed: only its current code is ever sent."""

    def may_go_to(self, destination: str) -> bool:
        """Never to a destination with no origin (about:blank, a relative URL with no base):
        a secret bound to "the base URL's origin" of a workflow without one goes nowhere."""
        if ANY_ORIGIN in self.origins:
            return True
        return destination != NO_ORIGIN and destination in self.origins


def exposures(value: str) -> set[str]:
    """The value as it may show in a response, a log line or a prompt: itself, URL-encoded,
    base64 (standard and URL-safe, with and without padding), hex, reversed, JSON-escaped;
    and each of those JSON-escaped."""
    raw = value.encode()
    forms = {
        value,
        quote(value),
        quote(value, safe=""),
        quote_plus(value),
        raw.hex(),
        raw.hex().upper(),
        value[::-1],
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
    }
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        encoded = encode(raw).decode()
        forms |= {encoded, encoded.rstrip("=")}
    # What is recorded is often JSON text itself (a command's output), escaping each form again.
    forms |= {json.dumps(form)[1:-1] for form in forms}
    return {form for form in forms if len(form) >= MIN_REDACTED_LENGTH}


def _any_of(forms: Iterable[str]) -> re.Pattern[str]:
    """A pattern matching any of `forms` in any letter case, the longest first (so that a
    secret containing another is replaced whole)."""
    alternatives = sorted(forms, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, alternatives)), re.IGNORECASE)


def _standalone(codes: Iterable[str]) -> re.Pattern[str]:
    """A pattern matching any of `codes` where no digit is next to it."""
    return re.compile(r"(?<!\d)(?:" + "|".join(map(re.escape, codes)) + r")(?!\d)")


def strings_in(data: Any) -> Iterator[str]:
    """Every string in `data`, dict keys included."""
    if isinstance(data, str):
        yield data
    elif isinstance(data, dict):
        for key, value in data.items():
            yield from strings_in(key)
            yield from strings_in(value)
    elif isinstance(data, list | tuple):
        for value in data:
            yield from strings_in(value)


class Secrets:
    """One session's secrets: `values` may go anywhere (the dev tenant's environment), each of
    `bound` only to its own origins (and wins over a value of the same name)."""

    def __init__(
        self, values: Mapping[str, str] | None = None, *, bound: Iterable[Secret] = ()
    ) -> None:
        self._by_name = {name: Secret(name, value) for name, value in (values or {}).items()}
        self._by_name.update((secret.name, secret) for secret in bound)
        # In any letter case: a value may come back upper-cased (a host name lower-cased).
        self._exposed = {
            secret: _any_of(exposures(secret.value))
            for secret in sorted(self._by_name.values(), key=lambda s: len(s.value))
            if len(secret.value) >= MIN_REDACTED_LENGTH
        }
        self._forms = {form: secret for secret in self._exposed for form in exposures(secret.value)}
        self._pattern = _any_of(self._forms) if self._forms else None
        self._codes: dict[str, str] = {}
        """Each one-time code filled in, and the seed it came from."""
        self._codes_pattern: re.Pattern[str] | None = None
        self._codes_lock = threading.Lock()

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Secrets:
        """`STEPLINE_SECRET_NAME` values and `STEPLINE_TOTP_NAME` seeds; UnreadableSeed for a
        seed that is not base32."""
        values = {k.removeprefix(PREFIX): v for k, v in environ.items() if k.startswith(PREFIX)}
        seeds = [
            Secret(variable.removeprefix(TOTP_PREFIX), _seed_of(variable, text), totp=True)
            for variable, text in environ.items()
            if variable.startswith(TOTP_PREFIX) and text
        ]
        return cls({name: value for name, value in values.items() if value}, bound=seeds)

    def joined(self, bound: Iterable[Secret]) -> Secrets:
        """These secrets and `bound`, which win on a shared name."""
        return Secrets(bound=[*self._by_name.values(), *bound])

    @property
    def too_short_to_redact(self) -> list[str]:
        return sorted(s.name for s in self._by_name.values() if len(s.value) < MIN_REDACTED_LENGTH)

    @property
    def names(self) -> list[str]:
        return sorted(self._by_name)

    @property
    def seed_names(self) -> list[str]:
        return sorted(name for name, secret in self._by_name.items() if secret.totp)

    # ---- filling in, for one destination --------------------------------------------------

    def resolve(self, text: str, destination: str) -> str:
        """Replace placeholders by values, each only if it may go to `destination`. Only
        executors call this, just before running. Raises SecretUnusable."""

        def value(match: re.Match[str]) -> str:
            wants_code, name = match.group(1) == TOTP, match.group(2)
            secret = self._by_name.get(name)
            if secret is None:
                raise SecretNotFound(name, totp=wants_code)
            if secret.totp != wants_code:
                raise SecretKindMismatch(name, seed=secret.totp)
            if not secret.may_go_to(destination):
                raise SecretOriginRefused.sending(name, destination, secret.origins)
            return self._code_of(secret) if wants_code else secret.value

        return FILLED.sub(value, text)

    def _code_of(self, seed: Secret) -> str:
        """The seed's code now, remembered so that it is redacted from now on."""
        code = pyotp.TOTP(seed.value).now()
        with self._codes_lock:
            if self._codes.get(code) != seed.name:
                self._codes[code] = seed.name
                self._codes_pattern = _standalone(self._codes)
        return code

    def resolve_all(self, data: Any, destination: str) -> Any:
        if isinstance(data, str):
            return self.resolve(data, destination)
        if isinstance(data, dict):
            return {k: self.resolve_all(v, destination) for k, v in data.items()}
        if isinstance(data, list):
            return [self.resolve_all(v, destination) for v in data]
        return data

    def filled(self, data: Any, destination: str) -> Any:
        """`data` with its placeholders filled for `destination`, after checking that no value
        reaches it by another way (a variable saved from a response that echoed it)."""
        resolved = self.resolve_all(data, destination)
        for secret in self.carried_by(resolved):
            if not secret.may_go_to(destination):
                raise SecretOriginRefused.sending(secret.name, destination, secret.origins)
        return resolved

    def carried_by(self, data: Any) -> list[Secret]:
        """The secrets whose value, in any of its exposures, is somewhere in `data`."""
        texts = list(strings_in(data))
        return [
            secret
            for secret, pattern in self._exposed.items()
            if any(pattern.search(text) for text in texts)
        ]

    def reach_of(self, data: Any) -> frozenset[str] | None:
        """Where what `data` carries may go, once sent: the origins every secret in it is
        bound to (a redirect may follow only there); None when nothing in it is bound."""
        reach: frozenset[str] | None = None
        for secret in self.carried_by(data):
            if ANY_ORIGIN not in secret.origins:
                origins = frozenset(secret.origins)
                reach = origins if reach is None else reach & origins
        return reach

    # ---- redaction ----------------------------------------------------------------------

    def redact(self, text: str) -> str:
        """Replace every secret value, in each of its exposures, by its placeholder, and each
        one-time code filled in so far, standing alone, by its `{{totp.NAME}}`."""
        if self._pattern is not None:
            text = self._pattern.sub(lambda m: placeholder(self._name_of(m.group(0))), text)
        codes = self._codes_pattern
        if codes is not None:
            text = codes.sub(lambda m: totp_placeholder(self._codes[m.group(0)]), text)
        return text

    def _name_of(self, matched: str) -> str:
        """The secret a redacted match is a form of (in another letter case, maybe)."""
        exact = self._forms.get(matched)
        if exact is not None:
            return exact.name
        return next(s.name for s, pattern in self._exposed.items() if pattern.fullmatch(matched))

    def redact_all(self, data: Any) -> Any:
        """`data` with every secret value in its strings replaced by its placeholder: in an
        object's keys too (an answer may key anything by a token)."""
        if isinstance(data, str):
            return self.redact(data)
        if isinstance(data, dict):
            return {self.redact_all(k): self.redact_all(v) for k, v in data.items()}
        if isinstance(data, list):
            return [self.redact_all(v) for v in data]
        return data


class SecretsInUse:
    """The secrets of the sessions this process runs now. A log line may be about any of
    them and its handler cannot tell which, so it is redacted with all of them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[object, Secrets] = {}

    def hold(self, secrets: Secrets) -> Callable[[], None]:
        """Redact `secrets` from log lines until the returned function is called."""
        token = object()
        with self._lock:
            self._held[token] = secrets
        return lambda: self._release(token)

    def _release(self, token: object) -> None:
        with self._lock:
            self._held.pop(token, None)

    def redact(self, text: str) -> str:
        with self._lock:
            held = list(self._held.values())
        for secrets in held:
            text = secrets.redact(text)
        return text


IN_USE = SecretsInUse()


class RedactingFilter(logging.Filter):
    """Rewrites each log record's message with secret values replaced: the process's
    environment secrets, and those of every session it runs now."""

    def __init__(self, secrets: Secrets, in_use: SecretsInUse = IN_USE) -> None:
        super().__init__()
        self.secrets = secrets
        self.in_use = in_use

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.in_use.redact(self.secrets.redact(message))
        if redacted != message:
            record.msg, record.args = redacted, None
        return True
