"""How many requests one caller may keep the server holding at once: long polls (`?wait=`),
followed logs, and downloads its client reads slowly or not at all. Each holds a thread of a
pool of the server's (`max_threads` of them), so one token, or one address without a token,
could otherwise take every thread and leave the workers' claims queued behind it.

Counted per token (by its name, from any address: behind a proxy on the same machine every
caller comes from loopback), or per address for a caller without one (an IPv6 one by its
/64); workers and admins are not counted (a fleet sharing one worker token holds a claim and
a heartbeat a slot, and the local workers use the admin token), nor are callers without a
token on loopback or the unix socket, who can do more than this already."""

from __future__ import annotations

import ipaddress
import threading

from blanket.auth import ADMIN, WORKER, Identity
from blanket.config.settings import is_loopback
from blanket.errors import BlanketError

HELD_PER_CALLER = 64  # requests one caller may have held at once
HELD = "blanket.held"  # environ key: the caller a held request was counted for
SHARE = "blanket.share"  # environ key: the HeldShare that counts a pooled request


class TooManyHeld(BlanketError):
    status = 429
    code = "too_many_requests"


def is_local(address: str) -> bool:
    """Whether a request came over loopback or the unix socket (no address)."""
    return not address or is_loopback(address)


def caller_key(caller: Identity | None, address: str) -> str | None:
    """Whom a request is counted for: its token (by name, from any address: behind a proxy
    on this machine every caller is local), or its address when it came without one; None
    for one not counted (a worker, an admin, a local caller without a token)."""
    if caller is not None and caller.role in (WORKER, ADMIN):
        return None
    if caller is not None and not caller.anonymous:
        return f"token {caller.name!r}"
    if is_local(address):
        return None
    return f"address {_network(address)}"


class Counts:
    """How many of something each key holds at once, under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}

    def take(self, key: str, most: int) -> int | None:
        """Count one more for `key`; or, when it holds `most` already, how many (refused)."""
        with self._lock:
            held = self._held.get(key, 0)
            if held >= most:
                return held
            self._held[key] = held + 1
            return None

    def give(self, key: str) -> None:
        """One fewer for `key` (nothing when it holds none)."""
        with self._lock:
            left = self._held.get(key, 0) - 1
            if left > 0:
                self._held[key] = left
            else:
                self._held.pop(key, None)

    def get(self, key: str) -> int:
        with self._lock:
            return self._held.get(key, 0)


class HeldShare:
    """Counts the held requests of each caller; `hold` refuses one past `most`."""

    def __init__(self, most: int = HELD_PER_CALLER):
        self.most = most
        self.counts = Counts()

    def hold(self, environ: dict, caller: Identity | None) -> None:
        """Count this request for its caller until `release`; TooManyHeld past the share.
        A request counted already is not counted again."""
        if HELD in environ:
            return
        key = caller_key(caller, environ.get("REMOTE_ADDR") or "")
        if key is None:
            return
        held = self.counts.take(key, self.most)
        if held is not None:
            raise TooManyHeld(
                f"{key} already has {held} requests held open (long polls, followed logs "
                "or downloads still being read): end one, or wait with shorter ?wait= "
                "and fewer at once")
        environ[HELD] = key

    def release(self, environ: dict) -> None:
        key = environ.pop(HELD, None)
        if key is not None:
            self.counts.give(key)


def _network(address: str) -> str:
    """An IPv4 address (also when mapped into IPv6), or the /64 an IPv6 one is in (one
    client holds a whole /64); a link-local one as it is, with its interface."""
    plain, _, scope = address.partition("%")
    try:
        parsed = ipaddress.ip_address(plain)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        if parsed.is_link_local:
            return f"{parsed}%{scope}" if scope else str(parsed)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)
