"""Held requests (long polls, followed logs, unread downloads) a caller may have at once:
counted per token, or per address without one; workers, admins and local callers not."""

from __future__ import annotations

import pytest

from blanket.auth import Identity, anonymous
from blanket.server.heldshare import HELD, HeldShare, TooManyHeld


def request(address: str = "203.0.113.5") -> dict:
    return {"REMOTE_ADDR": address}


def test_a_caller_holds_at_most_its_share_and_gets_it_back_on_release():
    share = HeldShare(most=2)
    alice = Identity(name="alice", role="viewer", token_id="t1")
    first, second, third = request(), request(), request()
    share.hold(first, alice)
    share.hold(second, alice)
    with pytest.raises(TooManyHeld, match="'alice' already has 2 requests held open"):
        share.hold(third, alice)
    assert HELD not in third
    share.hold(request("198.51.100.7"), Identity(name="bob", role="viewer", token_id="t2"))
    share.release(first)
    share.release(first)  # released once only
    share.hold(third, alice)
    assert share.counts.get("token 'alice'") == 2


def test_a_request_counted_once_however_often_it_is_held():
    share = HeldShare(most=1)
    env = request()
    caller = Identity(name="alice", role="submitter", token_id="t1")
    share.hold(env, caller)
    share.hold(env, caller)  # its stream after its long poll: the same request
    assert share.counts.get("token 'alice'") == 1


def test_callers_without_a_token_share_by_address():
    share = HeldShare(most=1)
    share.hold(request("203.0.113.5"), anonymous("viewer"))
    with pytest.raises(TooManyHeld, match=r"address 203\.0\.113\.5"):
        share.hold(request("203.0.113.5"), anonymous("viewer"))
    share.hold(request("203.0.113.6"), anonymous("viewer"))


@pytest.mark.parametrize(("address", "caller"), [
    ("203.0.113.5", Identity(name="fleet", role="worker", token_id="w")),
    ("203.0.113.5", Identity(name="root", role="admin", token_id="a")),
    ("127.0.0.1", anonymous("operator")),
    ("::1", anonymous("operator")),
    ("", anonymous("operator")),  # the unix socket
])
def test_workers_admins_and_local_callers_are_not_counted(address, caller):
    share = HeldShare(most=1)
    for _ in range(3):
        env = request(address)
        share.hold(env, caller)
        assert HELD not in env


def test_a_token_is_counted_from_loopback_too_behind_a_proxy_on_the_same_machine():
    share = HeldShare(most=1)
    alice = Identity(name="alice", role="viewer", token_id="t1")
    share.hold(request("127.0.0.1"), alice)
    with pytest.raises(TooManyHeld):
        share.hold(request("::1"), alice)


def test_callers_without_a_token_on_ipv6_share_by_their_64():
    share = HeldShare(most=1)
    share.hold(request("2001:db8:1:2::5"), anonymous("viewer"))
    with pytest.raises(TooManyHeld, match="2001:db8:1:2::/64"):
        share.hold(request("2001:db8:1:2:ffff::9"), anonymous("viewer"))
    share.hold(request("2001:db8:1:3::5"), anonymous("viewer"))
    share.hold(request("::ffff:203.0.113.5"), anonymous("viewer"))  # IPv4, mapped


def test_addresses_are_keyed_as_the_client_they_are():
    share = HeldShare(most=1)
    share.hold(request("203.0.113.5"), anonymous("viewer"))
    with pytest.raises(TooManyHeld):  # the same IPv4 client on a dual-stack socket
        share.hold(request("::ffff:203.0.113.5"), anonymous("viewer"))
    share.hold(request("fe80::1%eth0"), anonymous("viewer"))
    share.hold(request("fe80::1%eth1"), anonymous("viewer"))  # another link's neighbour
    env = request("::ffff:127.0.0.1")  # loopback on a dual-stack socket
    share.hold(env, anonymous("operator"))
    assert HELD not in env
