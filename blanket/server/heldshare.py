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
from blanket.errors import BlanketError

HELD_PER_CALLER = 64  # requests one caller may have held at once
HELD = "blanket.held"  # environ key: the caller a held request was counted for
SHARE = "blanket.share"  # environ key: the HeldShare that counts a pooled request


class TooManyHeld(BlanketError):
    status = 429
    code = "too_many_requests"


def is_local(address: str) -> bool:
    """Whether a request came over loopback or the unix socket (no address)."""
    if not address:
        return True
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return parsed.ipv4_mapped.is_loopback  # ::ffff:127.0.0.1 on a dual-stack socket
    return parsed.is_loopback


class HeldShare:
    """Counts the held requests of each caller; `hold` refuses one past `most`."""

    def __init__(self, most: int = HELD_PER_CALLER):
        self.most = most
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}

    def hold(self, environ: dict, caller: Identity | None) -> None:
        """Count this request for its caller until `release`; TooManyHeld past the share.
        A request counted already is not counted again."""
        if HELD in environ:
            return
        key = _key(environ, caller)
        if key is None:
            return
        with self._lock:
            held = self._held.get(key, 0)
            if held >= self.most:
                raise TooManyHeld(
                    f"{key} already has {held} requests held open (long polls, followed logs "
                    "or downloads still being read): end one, or wait with shorter ?wait= "
                    "and fewer at once")
            self._held[key] = held + 1
        environ[HELD] = key

    def release(self, environ: dict) -> None:
        key = environ.pop(HELD, None)
        if key is None:
            return
        with self._lock:
            left = self._held.get(key, 0) - 1
            if left > 0:
                self._held[key] = left
            else:
                self._held.pop(key, None)

    def count(self, key: str) -> int:
        with self._lock:
            return self._held.get(key, 0)


def _key(environ: dict, caller: Identity | None) -> str | None:
    if caller is not None and caller.role in (WORKER, ADMIN):
        return None
    if caller is not None and not caller.anonymous:
        # Whatever the address: behind a proxy on this machine every caller is local.
        return f"token {caller.name!r}"
    address = environ.get("REMOTE_ADDR") or ""
    if is_local(address):
        return None
    return f"address {_network(address)}"


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
