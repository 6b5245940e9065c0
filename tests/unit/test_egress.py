"""The egress decision, with no connection: addresses are data here (public ones included)."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from engine.tenancy.egress import (
    Allowed,
    AllowEntry,
    EgressPolicy,
    InvalidEgressEntry,
    Refusal,
    literal_address,
    non_public_kind,
    resolve,
)

PUBLIC_ONLY = EgressPolicy.of([])


def decide(policy: EgressPolicy, host: str, port: int, *addresses: str) -> Allowed | Refusal:
    return policy.decide(host, port, [ip_address(a) for a in addresses])


def refusal(policy: EgressPolicy, host: str, port: int, *addresses: str) -> Refusal:
    verdict = decide(policy, host, port, *addresses)
    assert isinstance(verdict, Refusal), f"{host} {addresses} was allowed"
    return verdict


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.254", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("169.254.0.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fd00:ec2::254", "unique-local"),
        ("fc00::1", "unique-local"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("100.64.0.1", "shared (CGNAT)"),
        ("100.127.255.254", "shared (CGNAT)"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:169.254.169.254", "link-local"),
        ("::7f00:1", "IPv4-compatible"),
        ("::ffff:0:a9fe:a9fe", "IPv4-translated"),
        ("64:ff9b::7f00:1", "NAT64"),
        ("2002:7f00:1::", "6to4"),
        ("fec0::1", "site-local"),
        ("192.0.2.1", "reserved"),
        ("198.18.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
    ],
)
def test_a_non_public_address_is_refused_under_the_public_only_policy(
    address: str, kind: str
) -> None:
    assert non_public_kind(ip_address(address)) == kind
    refused = refusal(PUBLIC_ONLY, "target.example.com", 80, address)
    assert (refused.address, refused.rule) == (address, kind)
    assert refused.message == (
        f"{kind} address {address} (of target.example.com:80) is not in this tenant's "
        "egress allow-list"
    )


@pytest.mark.parametrize("address", ["1.1.1.1", "8.8.8.8", "93.184.216.34", "2606:4700::1111"])
def test_a_public_address_is_allowed_under_the_public_only_policy(address: str) -> None:
    assert non_public_kind(ip_address(address)) is None
    assert decide(PUBLIC_ONLY, "example.com", 443, address) == Allowed((ip_address(address),))


def test_one_non_public_address_among_public_ones_refuses_the_host() -> None:
    refused = refusal(PUBLIC_ONLY, "rebind.example.com", 80, "8.8.8.8", "127.0.0.1")
    assert (refused.host, refused.address, refused.rule) == (
        "rebind.example.com",
        "127.0.0.1",
        "loopback",
    )


def test_a_host_that_resolved_to_nothing_is_refused() -> None:
    assert refusal(PUBLIC_ONLY, "empty.example.com", 80).rule == "unresolved"


def test_an_exact_host_entry_admits_that_host_alone() -> None:
    policy = EgressPolicy.of(["api.example.com"])
    assert isinstance(decide(policy, "api.example.com", 443, "93.184.216.34"), Allowed)
    assert isinstance(decide(policy, "API.Example.com.", 443, "93.184.216.34"), Allowed)
    other = refusal(policy, "www.example.com", 443, "93.184.216.34")
    assert other.rule == "allow-list"
    assert other.message == (
        "www.example.com:443 (93.184.216.34) is not in this tenant's egress allow-list"
    )
    assert refusal(policy, "sub.api.example.com", 443, "93.184.216.34").rule == "allow-list"


def test_a_non_empty_list_no_longer_admits_the_rest_of_the_public_internet() -> None:
    policy = EgressPolicy.of(["api.example.com"])
    assert refusal(policy, "8.8.8.8", 53, "8.8.8.8").rule == "allow-list"


def test_a_wildcard_entry_admits_subdomains_not_the_domain_itself() -> None:
    policy = EgressPolicy.of(["*.example.org"])
    assert isinstance(decide(policy, "a.example.org", 80, "93.184.216.34"), Allowed)
    assert isinstance(decide(policy, "a.b.example.org", 80, "93.184.216.34"), Allowed)
    assert refusal(policy, "example.org", 80, "93.184.216.34").rule == "allow-list"
    assert refusal(policy, "badexample.org", 80, "93.184.216.34").rule == "allow-list"


def test_a_wildcard_never_admits_a_non_public_address() -> None:
    policy = EgressPolicy.of(["*.example.org"])
    refused = refusal(policy, "rebound.example.org", 80, "127.0.0.1")
    assert refused.rule == "loopback"
    assert "a wildcard entry (*.example.org) never admits a non-public address" in refused.message
    assert refusal(policy, "meta.example.org", 80, "169.254.169.254").rule == "link-local"


def test_an_exact_host_entry_admits_its_non_public_addresses() -> None:
    policy = EgressPolicy.of(["db.internal"])
    assert isinstance(decide(policy, "db.internal", 5432, "10.0.0.5"), Allowed)
    assert refusal(policy, "other.internal", 5432, "10.0.0.5").rule == "private"


def test_a_port_entry_admits_that_port_only() -> None:
    policy = EgressPolicy.of(["api.example.com:443", "127.0.0.1:8080", "[::1]:8081"])
    assert isinstance(decide(policy, "api.example.com", 443, "93.184.216.34"), Allowed)
    assert refusal(policy, "api.example.com", 80, "93.184.216.34").rule == "allow-list"
    assert isinstance(decide(policy, "127.0.0.1", 8080, "127.0.0.1"), Allowed)
    assert refusal(policy, "127.0.0.1", 8081, "127.0.0.1").rule == "loopback"
    assert isinstance(decide(policy, "::1", 8081, "::1"), Allowed)
    assert refusal(policy, "::1", 8080, "::1").rule == "loopback"


def test_an_address_entry_admits_that_address_by_any_name_or_spelling() -> None:
    policy = EgressPolicy.of(["127.0.0.1"])
    assert isinstance(decide(policy, "127.0.0.1", 80, "127.0.0.1"), Allowed)
    assert isinstance(decide(policy, "127.1", 80, "127.0.0.1"), Allowed)
    assert isinstance(decide(policy, "::ffff:127.0.0.1", 80, "::ffff:127.0.0.1"), Allowed)
    assert refusal(policy, "127.0.0.2", 80, "127.0.0.2").rule == "loopback"
    # localhost is also ::1, which the entry does not hold
    assert refusal(policy, "localhost", 80, "127.0.0.1", "::1").address == "::1"


def test_a_network_entry_admits_the_addresses_inside_it() -> None:
    policy = EgressPolicy.of(["10.0.0.0/8", "fd00::/8"])
    assert isinstance(decide(policy, "build.corp", 80, "10.20.30.40"), Allowed)
    assert isinstance(decide(policy, "v6.corp", 80, "fd12::1"), Allowed)
    assert refusal(policy, "build.corp", 80, "192.168.0.1").rule == "private"
    assert refusal(policy, "meta", 80, "169.254.169.254").rule == "link-local"
    assert refusal(policy, "public.example", 80, "93.184.216.34").rule == "allow-list"


def test_the_any_host_entry_admits_every_address() -> None:
    policy = EgressPolicy.of(["*"])
    for address in ("127.0.0.1", "::1", "169.254.169.254", "10.0.0.1", "93.184.216.34"):
        assert isinstance(decide(policy, "anything", 1, address), Allowed)


def test_the_refusing_policy_admits_nothing() -> None:
    policy = EgressPolicy.refusing_all()
    assert refusal(policy, "example.com", 443, "93.184.216.34").rule == "allow-list"
    assert refusal(policy, "localhost", 80, "127.0.0.1").rule == "loopback"


@pytest.mark.parametrize(
    "entry", ["", "http://example.com", "exa mple.com", "host:0", "host:99999", "10.0.0.0/33"]
)
def test_an_entry_that_names_nothing_is_refused_when_parsed(entry: str) -> None:
    with pytest.raises(InvalidEgressEntry):
        AllowEntry.parse(entry)


@pytest.mark.parametrize(
    ("spelling", "address"),
    [
        ("127.1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.000.000.001", "127.0.0.1"),
        ("[::1]", "::1"),
        ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1"),
        ("0", "0.0.0.0"),
    ],
)
def test_an_address_is_judged_whatever_its_spelling(spelling: str, address: str) -> None:
    assert literal_address(spelling) == ip_address(address)
    assert resolve(spelling, 80) == [ip_address(address)]
    refused = refusal(PUBLIC_ONLY, spelling, 80, *map(str, resolve(spelling, 80)))
    assert refused.rule in ("loopback", "unspecified")


@pytest.mark.parametrize("name", ["localhost", "localhost.", "LOCALHOST", "api.localhost"])
def test_localhost_names_are_loopback_without_asking_dns(name: str) -> None:
    addresses = resolve(name, 80)
    assert addresses == [ip_address("127.0.0.1"), ip_address("::1")]
    assert refusal(PUBLIC_ONLY, name, 80, *map(str, addresses)).rule == "loopback"


def test_a_name_is_not_read_as_an_address() -> None:
    assert literal_address("example.com") is None
    assert literal_address("cafe") is None
    assert literal_address("deadbeef.example") is None


def test_a_name_no_entry_could_admit_is_refused_without_a_lookup() -> None:
    policy = EgressPolicy.of(["api.example.com", "*.example.org:443"])
    refused = policy.refusal_before_lookup("metadata.google.internal", 80)
    assert refused is not None
    assert (refused.address, refused.rule) == ("", "allow-list")
    assert policy.refusal_before_lookup("a.example.org", 80) is not None  # wrong port
    assert policy.refusal_before_lookup("a.example.org", 443) is None
    assert policy.refusal_before_lookup("api.example.com", 80) is None
    assert EgressPolicy.refusing_all().refusal_before_lookup("example.com", 443) is not None


def test_a_name_may_resolve_into_an_address_entry_so_it_is_looked_up() -> None:
    policy = EgressPolicy.of(["10.0.0.0/8"])
    assert policy.refusal_before_lookup("build.corp", 80) is None
    assert PUBLIC_ONLY.refusal_before_lookup("example.com", 80) is None
