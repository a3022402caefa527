"""The pure address check of the outbound guard, and the operator's allow-list."""

import ipaddress

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from agents.outbound import AllowList, OutboundBlocked, blocked_reason, check_host


def ip(text):
    return ipaddress.ip_address(text)


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("10.255.255.255", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.254", "private"),
        ("192.168.1.10", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - an address under test, not a bind
        ("::", "unspecified"),
        ("100.64.0.1", "shared"),
        ("100.127.255.254", "shared"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.10", "private"),
        ("2001:db8::1", "private"),
    ],
)
def test_it_blocks_internal_and_special_addresses(address, words):
    assert words in blocked_reason(address)


@pytest.mark.parametrize("address", ["192.0.0.8", "64:ff9b:1::1", "5f00::1"])
def test_it_blocks_special_addresses_that_some_python_versions_call_global(address):
    assert blocked_reason(address) is not None


@pytest.mark.parametrize("address", ["169.254.169.254", "fd00:ec2::254", "100.100.100.200"])
def test_it_names_cloud_metadata_addresses(address):
    assert blocked_reason(address) == "a cloud metadata service"


def test_it_blocks_the_ipv4_mapped_form_of_loopback():
    assert blocked_reason("::ffff:127.0.0.1") == (
        "the IPv4-mapped form of 127.0.0.1, loopback: this machine itself"
    )


def test_it_blocks_the_nat64_form_of_loopback():
    # ipaddress says 64:ff9b::7f00:1 is global (Python 3.11); the guard unwraps it.
    assert ipaddress.ip_address("64:ff9b::7f00:1").is_global
    assert blocked_reason("64:ff9b::7f00:1") == (
        "the NAT64 form of 127.0.0.1, loopback: this machine itself"
    )


def test_it_blocks_the_nat64_form_of_the_metadata_address():
    assert blocked_reason("64:ff9b::a9fe:a9fe") == (
        "the NAT64 form of 169.254.169.254, a cloud metadata service"
    )


def test_it_blocks_the_local_use_nat64_prefix_as_a_whole():
    assert "169.254.169.254" in blocked_reason("64:ff9b:1::a9fe:a9fe")
    assert blocked_reason("64:ff9b:1::5db8:d822") == "a local-use NAT64 prefix"


def test_it_blocks_the_6to4_form_of_loopback():
    assert ipaddress.ip_address("2002:7f00:1::").is_global
    assert blocked_reason("2002:7f00:1::") == (
        "the 6to4 form of 127.0.0.1, loopback: this machine itself"
    )


def test_it_blocks_the_teredo_form_of_a_private_client():
    # Teredo client 10.0.0.1 (stored inverted as f5ff:fffe) behind server 65.54.227.120.
    address = "2001:0:4136:e378:8000:63bf:f5ff:fffe"
    assert ipaddress.ip_address(address).teredo[1] == ipaddress.ip_address("10.0.0.1")
    assert blocked_reason(address) == "the Teredo form of 10.0.0.1, a private network"


def test_it_blocks_the_ipv4_translated_and_ipv4_compatible_forms_of_loopback():
    assert "127.0.0.1, loopback" in blocked_reason("::ffff:0:7f00:1")
    assert "127.0.0.1, loopback" in blocked_reason("::7f00:1")


@pytest.mark.parametrize(
    "address",
    [
        "93.184.216.34",
        "8.8.8.8",
        "1.1.1.1",
        "2606:4700::1111",
        "2a00:1450:4001:80b::200e",
        # Other spellings of a public IPv4 address are as public as the address itself.
        "::ffff:93.184.216.34",
        "64:ff9b::5db8:d822",
        "2002:5db8:d822::1",
    ],
)
def test_it_lets_public_addresses_pass(address):
    assert blocked_reason(address) is None


def test_it_accepts_address_objects_as_well_as_text():
    assert blocked_reason(ip("10.0.0.1")) == blocked_reason("10.0.0.1") == "a private network"


# --- The allow-list ---------------------------------------------------------------------------


def test_a_host_entry_matches_the_host_as_written_regardless_of_case():
    allowed = AllowList.parse(["Billing.Internal", "127.0.0.1", "[::1]"])

    assert allowed.allows_host("billing.internal")
    assert allowed.allows_host("BILLING.INTERNAL")
    assert allowed.allows_host("127.0.0.1")
    assert allowed.allows_host("::1")
    assert not allowed.allows_host("localhost")
    assert not allowed.allows_host("2130706433")
    assert not allowed.allows_host("127.1")


def test_a_network_entry_matches_resolved_addresses():
    allowed = AllowList.parse(["127.0.0.0/8", "fd00:1::/32"])

    assert allowed.allows_address(ip("127.0.0.1"))
    assert allowed.allows_address(ip("127.9.9.9"))
    assert allowed.allows_address(ip("fd00:1::5"))
    assert not allowed.allows_address(ip("10.0.0.1"))
    assert not allowed.allows_address(ip("::1"))


def test_no_network_entry_opens_a_cloud_metadata_address():
    allowed = AllowList.parse(["0.0.0.0/0", "::/0", "169.254.0.0/16"])

    assert allowed.allows_address(ip("169.254.1.1"))
    assert not allowed.allows_address(ip("169.254.169.254"))
    assert not allowed.allows_address(ip("fd00:ec2::254"))


def test_a_malformed_network_entry_fails_loudly():
    with pytest.raises(ImproperlyConfigured, match=r"10\.0\.0\.0/33"):
        AllowList.parse(["10.0.0.0/33"])


def test_check_host_refuses_a_name_when_any_of_its_addresses_is_internal():
    with (
        override_settings(CONVEYOR_OUTBOUND_ALLOW=[]),
        pytest.raises(OutboundBlocked) as caught,
    ):
        check_host("mixed.example", [ip("93.184.216.34"), ip("10.0.0.7")])

    assert caught.value.host == "mixed.example"
    assert caught.value.address == "10.0.0.7"
    assert str(caught.value) == (
        "The address “mixed.example” resolves to a private or internal network address "
        "(10.0.0.7 — a private network), which Conveyor does not call for safety. An operator "
        "can allow it with CONVEYOR_OUTBOUND_ALLOW."
    )


def test_check_host_lets_a_metadata_address_through_only_when_named_as_a_host():
    metadata = [ip("169.254.169.254")]
    with (
        override_settings(CONVEYOR_OUTBOUND_ALLOW=["169.254.0.0/16"]),
        pytest.raises(OutboundBlocked),
    ):
        check_host("169.254.169.254", metadata)

    with override_settings(CONVEYOR_OUTBOUND_ALLOW=["169.254.169.254"]):
        check_host("169.254.169.254", metadata)  # no exception
