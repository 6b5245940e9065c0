"""The egress filter: where a tenant's workflows may connect, decided on the address.

One policy per tenant (`Policy.egress_allow`): an empty list is the public internet only; a
list admits only the hosts, addresses and networks it names; `*` admits everything (the dev
tenant). A non-public address (loopback, private, link-local, metadata, …) is reached only when
an entry names that exact host or an address range holding it: a wildcard never admits one, or
any name under it could be pointed at an internal service (DNS rebinding).

Every connection resolves the host once, decides on every address it resolved to, and connects
to an address it decided on — never to a second lookup of the name. Nothing is sent before the
decision, so a refused open port and a refused closed port look the same (no port scanning).
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)

import httpcore
import httpx
from httpcore import SOCKET_OPTION

from domain.tenant import ANY_HOST

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

NUMERIC_IPV4 = re.compile(r"^[0-9a-fx.]+$", re.IGNORECASE)
"""What inet_aton might read as an IPv4 address: `127.1`, `0x7f000001`, `2130706433`."""
HOST_NAME = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$")
LOOPBACK_NAMES = (IPv4Address("127.0.0.1"), IPv6Address("::1"))

NON_PUBLIC: tuple[tuple[str, IPNetwork], ...] = tuple(
    (kind, ip_network(network))
    for kind, network in (
        ("unspecified", "0.0.0.0/8"),
        ("loopback", "127.0.0.0/8"),
        ("private", "10.0.0.0/8"),
        ("private", "172.16.0.0/12"),
        ("private", "192.168.0.0/16"),
        ("link-local", "169.254.0.0/16"),
        ("shared (CGNAT)", "100.64.0.0/10"),
        ("multicast", "224.0.0.0/4"),
        ("reserved", "240.0.0.0/4"),
        ("unspecified", "::/128"),
        ("loopback", "::1/128"),
        ("IPv4-compatible", "::/96"),
        ("IPv4-translated", "::ffff:0:0:0/96"),
        ("link-local", "fe80::/10"),
        ("site-local", "fec0::/10"),
        ("unique-local", "fc00::/7"),
        ("multicast", "ff00::/8"),
        ("NAT64", "64:ff9b::/96"),
        ("NAT64", "64:ff9b:1::/48"),
        ("6to4", "2002::/16"),
        ("Teredo", "2001::/32"),
    )
)
"""Ranges that are not the public internet, named for the refusal. The IPv6 forms that carry
an IPv4 address (NAT64, 6to4, Teredo, IPv4-compatible and -translated) are refused outright:
a tenant reaches a public IPv4 host by its IPv4 address."""


class InvalidEgressEntry(ValueError):
    """An allow-list entry that is no host, address or network; the message says which."""


class EgressRefused(Exception):
    """A connection the tenant's egress policy does not allow; nothing was sent."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


@dataclass(frozen=True)
class Refusal:
    host: str
    port: int
    address: str
    rule: str
    """Why: the kind of non-public address (`loopback`), or `allow-list` for a host the
    tenant's non-empty list does not name."""
    message: str

    def details(self) -> dict[str, str | int]:
        return {"host": self.host, "port": self.port, "address": self.address, "rule": self.rule}


@dataclass(frozen=True)
class Allowed:
    addresses: tuple[IPAddress, ...]
    """Every address the host resolved to, each decided on: connect to these, in order."""


@dataclass(frozen=True)
class AllowEntry:
    """One allow-list entry: an exact host name, a `*.` wildcard, or an address network,
    optionally for one port only."""

    text: str
    name: str = ""
    suffix: str = ""
    """For `*.example.org`: `.example.org` (subdomains only)."""
    network: IPNetwork | None = None
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> AllowEntry:
        host, port = _split_port(text.strip())
        network = _network(host)
        if network is not None:
            return cls(text, network=network, port=port)
        name = host_name(host)
        if name.startswith("*.") and HOST_NAME.match(name[2:]):
            return cls(text, suffix=name[1:], port=port)
        if HOST_NAME.match(name):
            return cls(text, name=name, port=port)
        raise InvalidEgressEntry(
            f"egress entry {text!r} is not a host, *.domain, address or network (with an "
            "optional :port)"
        )

    def admits_port(self, port: int) -> bool:
        return self.port is None or self.port == port

    def contains(self, address: IPAddress) -> bool:
        return self.network is not None and any(a in self.network for a in _forms(address))

    def covers(self, name: str) -> bool:
        return name == self.name or (bool(self.suffix) and name.endswith(self.suffix))


@dataclass(frozen=True)
class EgressPolicy:
    entries: tuple[AllowEntry, ...] = ()
    everything: bool = False
    public: bool = True
    """Whether an empty list admits the public internet (False: a policy refusing all)."""

    @classmethod
    def of(cls, allow: Sequence[str]) -> EgressPolicy:
        """The policy of a tenant's `egress_allow`; InvalidEgressEntry names a bad entry."""
        if ANY_HOST in allow:
            return cls(everything=True)
        return cls(tuple(AllowEntry.parse(entry) for entry in allow))

    @classmethod
    def refusing_all(cls) -> EgressPolicy:
        return cls(public=False)

    def decide(self, host: str, port: int, addresses: Sequence[IPAddress]) -> Allowed | Refusal:
        """Whether `host:port`, resolved to `addresses`, may be connected to: every address
        must be allowed (one refused address refuses the host)."""
        if self.everything:
            return Allowed(tuple(addresses))
        name = host_name(host)
        if not addresses:
            return Refusal(name, port, "", "unresolved", f"{name} resolved to no address")
        for address in addresses:
            refusal = self._refusal(name, port, address)
            if refusal is not None:
                return refusal
        return Allowed(tuple(addresses))

    def refusal_before_lookup(self, host: str, port: int) -> Refusal | None:
        """The refusal of a name no entry could admit, whatever it resolves to: such a name
        is not even looked up (a lookup is traffic too)."""
        if self.everything or (self.public and not self.entries):
            return None
        name = host_name(host)
        if literal_address(name) is not None:
            return None
        fitting = [entry for entry in self.entries if entry.admits_port(port)]
        if any(entry.network is not None or entry.covers(name) for entry in fitting):
            return None
        return Refusal(
            name, port, "", "allow-list", f"{name}:{port} is not in this tenant's egress allow-list"
        )

    def _refusal(self, name: str, port: int, address: IPAddress) -> Refusal | None:
        fitting = [entry for entry in self.entries if entry.admits_port(port)]
        if any(entry.contains(address) for entry in fitting):
            return None
        kind = non_public_kind(address)
        if kind is not None:
            if any(entry.name == name for entry in fitting):
                return None
            return self._non_public_refusal(name, port, address, kind)
        if (not self.entries and self.public) or any(entry.covers(name) for entry in fitting):
            return None
        return Refusal(
            name,
            port,
            shown(address),
            "allow-list",
            f"{name}:{port} ({shown(address)}) is not in this tenant's egress allow-list",
        )

    def _non_public_refusal(self, name: str, port: int, address: IPAddress, kind: str) -> Refusal:
        message = (
            f"{kind} address {shown(address)} (of {name}:{port}) is not in this tenant's "
            "egress allow-list"
        )
        wildcard = next((e for e in self.entries if e.suffix and e.covers(name)), None)
        if wildcard is not None:
            message += (
                f"; a wildcard entry ({wildcard.text}) never admits a non-public address: "
                "name the host or its address"
            )
        return Refusal(name, port, shown(address), kind, message)

    def addresses(self, host: str, port: int) -> tuple[IPAddress, ...]:
        """The addresses of `host`, resolved once, to connect to on `port`. Raises
        EgressRefused, or OSError if the host does not resolve."""
        unlisted = self.refusal_before_lookup(host, port)
        if unlisted is not None:
            raise EgressRefused(unlisted)
        verdict = self.decide(host, port, resolve(host, port))
        if isinstance(verdict, Refusal):
            raise EgressRefused(verdict)
        return verdict.addresses

    def connect(self, host: str, port: int, timeout_s: float | None) -> socket.socket:
        """A socket connected to `host:port` at an address this policy allows. Raises
        EgressRefused before anything is sent, or OSError if no allowed address answers."""
        failure: OSError = OSError(f"{host} has no address")
        for address in self.addresses(host, port):
            family = socket.AF_INET6 if isinstance(address, IPv6Address) else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout_s)
                sock.connect((str(address), port))
            except OSError as error:
                sock.close()
                failure = error
                continue
            return sock
        raise failure


class CheckedBackend(httpcore.SyncBackend):
    """httpcore's network backend, connecting only where `policy` allows: to the addresses it
    decided on, by number (TLS's server name and the Host header stay the URL's host)."""

    def __init__(self, policy: EgressPolicy) -> None:
        self.policy = policy

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = self.policy.addresses(host, port)
        except socket.gaierror as error:
            raise httpcore.ConnectError(f"{host} does not resolve: {error}") from None
        failure: Exception = httpcore.ConnectError(f"{host} has no address")
        for address in addresses:
            try:
                return super().connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                failure = error
        raise failure


HTTPX_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)  # httpx's own


def checked_transport(
    policy: EgressPolicy,
    ssl_context: ssl.SSLContext,
    limits: httpx.Limits = HTTPX_LIMITS,
    *,
    backend: CheckedBackend | None = None,
) -> httpx.HTTPTransport:
    """An httpx transport whose every connection (each redirect hop too) passes `policy`
    (through `backend`, a CheckedBackend of it, if given). It never uses a proxy from the
    environment: one would connect on the tenant's behalf."""
    transport = httpx.HTTPTransport(verify=ssl_context, trust_env=False)
    transport._pool = httpcore.ConnectionPool(  # the only way to give httpx a network backend
        ssl_context=ssl_context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=backend or CheckedBackend(policy),
    )
    return transport


def non_public_kind(address: IPAddress) -> str | None:
    """The kind of non-public range `address` is in (`loopback`, `private`, …), or None for a
    public address. An IPv4-mapped IPv6 address is judged as the IPv4 address it is."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return non_public_kind(address.ipv4_mapped)
    for kind, network in NON_PUBLIC:
        if address in network:
            return kind
    return None if address.is_global else "reserved"


def host_name(host: str) -> str:
    """A host as compared: lower case, no brackets, no trailing dot (`localhost.`)."""
    return host.strip().strip("[]").rstrip(".").lower()


def literal_address(host: str) -> IPAddress | None:
    """The address a host written as an address stands for, in any spelling the resolver
    accepts (`127.1`, `0x7f000001`, `2130706433`, `[::ffff:127.0.0.1]`); None for a name."""
    text = host_name(host)
    try:
        return ip_address(text)
    except ValueError:
        pass
    if NUMERIC_IPV4.match(text):
        try:
            return IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` stands for, looked up once. `localhost` and its subdomains are
    loopback by definition (RFC 6761), without asking DNS. Raises OSError if unresolvable."""
    literal = literal_address(host)
    if literal is not None:
        return [literal]
    name = host_name(host)
    if name == "localhost" or name.endswith(".localhost"):
        return list(LOOPBACK_NAMES)
    found = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ip_address(info[4][0]) for info in found))


def shown(address: IPAddress) -> str:
    """An address as people write it: an IPv4-mapped one as `::ffff:127.0.0.1`."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}"
    return str(address)


def _forms(address: IPAddress) -> tuple[IPAddress, ...]:
    """The address and, for an IPv4-mapped one, the IPv4 address it reaches."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return (address, address.ipv4_mapped)
    return (address,)


def _split_port(text: str) -> tuple[str, int | None]:
    """`host:443` -> (`host`, 443); `[::1]:80` -> (`::1`, 80); a bare IPv6 has no port."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, _port(text, rest[1:]) if rest.startswith(":") else None
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, _port(text, port)
    return text, None


def _port(entry: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise InvalidEgressEntry(f"egress entry {entry!r} has no valid port")
    return int(text)


def _network(host: str) -> IPNetwork | None:
    if "/" in host:
        try:
            return ip_network(host, strict=False)
        except ValueError as error:
            raise InvalidEgressEntry(f"egress entry {host!r} is not a network: {error}") from None
    address = literal_address(host)
    return None if address is None else ip_network(address)
