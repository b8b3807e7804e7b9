"""Access by source network (the seed's ACL section).

Clients from a trusted CIDR reach every endpoint. Everyone else (booted servers, BMCs,
firmware) reaches only what they need: PUT on a checkin, GET/HEAD on artifacts and on
published images, the health check, the git webhook (signed: the handler verifies it).
With ``status_public: true``, the status page and the fleet API too (GET and HEAD only).
Anything else is 403 with an Error body, unknown paths
included, so an untrusted client learns nothing about what exists.

The client is the TCP peer. X-Forwarded-For is believed only when the peer is one of the
configured ``trusted_proxies``; then the client is the right-most address in the header that
is not itself a trusted proxy.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence

from reconciler.settings import Network

# Endpoint (blueprint.view) -> methods an untrusted client may use. A new blueprint that
# serves untrusted clients adds its row here.
PUBLIC: Mapping[str, frozenset[str]] = {
    "checkins.update": frozenset({"PUT"}),
    "artifacts.artifact": frozenset({"GET", "HEAD"}),
    "images.image": frozenset({"GET", "HEAD"}),
    "health.healthz": frozenset({"GET", "HEAD"}),
    # The git host's push webhook: signed with the shared secret, verified by the handler.
    "hooks.git": frozenset({"POST"}),
}

# The read-only status page and fleet API: open to untrusted clients only with
# ``status_public: true`` (they show server names, states and messages; never a secret).
STATUS: Mapping[str, frozenset[str]] = {
    endpoint: frozenset({"GET", "HEAD"})
    for endpoint in ("status.root", "status.page", "status.host_page", "status.hosts",
                     "status.host", "status.revision")
}


def public_endpoints(status_public: bool) -> Mapping[str, frozenset[str]]:
    """What untrusted clients may reach under these settings: :data:`PUBLIC`, and
    :data:`STATUS` when ``status_public`` is set."""
    return {**PUBLIC, **STATUS} if status_public else PUBLIC


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_address(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text.strip().split("%", 1)[0])
    except ValueError:
        return None
    # An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _within(address: Address | None, networks: Sequence[Network]) -> bool:
    return address is not None and any(address in net for net in networks)


def client_address(
    peer: str, forwarded_for: str | None, trusted_proxies: Sequence[Network]
) -> Address | None:
    address = parse_address(peer)
    if forwarded_for is None or not _within(address, trusted_proxies):
        return address
    for hop in reversed(forwarded_for.split(",")):
        hop_address = parse_address(hop)
        if hop_address is None:
            return None  # a garbled chain: trust nothing in it
        address = hop_address
        if not _within(address, trusted_proxies):
            break
    return address


def allowed(
    client: Address | None, trusted: Sequence[Network], endpoint: str | None, method: str
) -> bool:
    if _within(client, trusted):
        return True
    return endpoint is not None and method in PUBLIC.get(endpoint, frozenset())


class Verdicts:
    """``(trusted, client)`` per peer (and X-Forwarded-For), cached: parsing and matching
    CIDRs on every request costs more than the handlers of the busiest endpoints (checkin
    PUT, artifact GET). Shared by the Flask app and the fast path."""

    LIMIT = 4096

    def __init__(self, trusted: Sequence[Network], trusted_proxies: Sequence[Network]) -> None:
        self.trusted = tuple(trusted)
        self.trusted_proxies = tuple(trusted_proxies)
        self._cache: dict[str, tuple[bool, str]] = {}

    def __call__(self, peer: str, forwarded: str | None) -> tuple[bool, str]:
        key = peer if forwarded is None else f"{peer}|{forwarded}"
        found = self._cache.get(key)
        if found is None:
            client = client_address(peer, forwarded, self.trusted_proxies)
            trusted = allowed(client, self.trusted, None, "")
            found = (trusted, str(client) if client is not None else (peer or "-"))
            if len(self._cache) > self.LIMIT:
                self._cache.clear()
            self._cache[key] = found
        return found
