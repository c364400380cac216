"""The SSRF guard of outbound requests: which URLs and addresses a webhook may reach.

A webhook URL comes from a tenant, so without a guard it could make the notifier call the cloud
metadata service or an internal admin port on the tenant's behalf. The guard refuses, unless an
allow-list CIDR admits the address: loopback, private, link-local, site-local (fec0::/10),
multicast, unspecified, shared (CGNAT 100.64/10), reserved and the metadata addresses, also when
spelled as an IPv4-mapped, 6to4, NAT64 or Teredo IPv6 address; schemes other than http(s);
the odd IPv4 spellings (`127.1`, `2130706433`, `0x7f000001`, `0177.0.0.1`) that resolvers read
differently; and ports outside `notify_allow_ports` (80, 443, 8080, 8443 by default: fault
matrix O1's "disallowed port").

Checks happen three times: when a subscription is saved (the URL and what its name resolves to
then), before each send (the same, with the resolver the connection will use), and at connect
time through `socket_factory`, which sees the very address the socket connects to; so a name
that resolves to a public address first and to 127.0.0.1 later (DNS rebinding) is still refused.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import SplitResult, urlsplit

from host.errors import ConfigError, FieldError, ValidationFailed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Cloud metadata services, refused by name and by address.
METADATA_NAMES = frozenset({"metadata.google.internal", "metadata.goog", "metadata"})
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254")
)
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
SCHEMES = frozenset({"http", "https"})


class Refused(OSError):
    """Raised when a destination is refused by the SSRF guard (an OSError so that aiohttp's
    connector passes it on as the cause of its connection error)."""


def parse_allow_list(cidrs: str | Iterable[str]) -> tuple[IPNetwork, ...]:
    """CIDRs from a comma-separated setting (or a list); a bad one is a ConfigError."""
    items = cidrs.split(",") if isinstance(cidrs, str) else list(cidrs)
    nets: list[IPNetwork] = []
    for item in items:
        if not item.strip():
            continue
        try:
            nets.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError as exc:
            raise ConfigError(f"notify_allow_cidrs: {item.strip()!r} is not a CIDR") from exc
    return tuple(nets)


def _embedded(addr: IPAddress) -> list[IPAddress]:
    """The address and the IPv4 addresses an IPv6 form carries (mapped, 6to4, NAT64, Teredo)."""
    found: list[IPAddress] = [addr]
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            found.append(addr.ipv4_mapped)
        if addr.sixtofour is not None:
            found.append(addr.sixtofour)
        if addr.teredo is not None:
            found.extend(addr.teredo)
        if addr in _NAT64 or addr in _NAT64_LOCAL:
            found.append(ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF))
    return found


def _why(addr: IPAddress) -> str | None:
    """Why one address is refused, or None."""
    if addr in METADATA_ADDRESSES:
        return "a cloud metadata address"
    checks = (
        (addr.is_unspecified, "unspecified"),
        (addr.is_loopback, "loopback"),
        (addr.is_link_local, "link-local"),
        (isinstance(addr, ipaddress.IPv6Address) and addr.is_site_local, "site-local (fec0::/10)"),
        (addr.is_multicast, "multicast"),
        (isinstance(addr, ipaddress.IPv4Address) and addr in _CGNAT, "shared (CGNAT 100.64/10)"),
        (addr.is_private, "private"),
        (addr.is_reserved, "reserved"),
        (not addr.is_global, "not a public address"),
    )
    for hit, what in checks:
        if hit:
            return what
    return None


#: Default ports a URL may name (notify_allow_ports): the web's, and their usual alternates.
DEFAULT_PORTS = frozenset({80, 443, 8080, 8443})


class Guard:
    """The SSRF policy with its allow-list (`notify_allow_cidrs`) and the ports a URL may use
    (`notify_allow_ports`; None: any), so a tenant cannot reach e.g. a public Redis or SMTP
    port through us."""

    def __init__(
        self, allow: Iterable[IPNetwork] = (), ports: Iterable[int] | None = DEFAULT_PORTS
    ) -> None:
        self.allow = tuple(allow)
        self.ports = None if ports is None else frozenset(ports)

    def port_refusal(self, port: int) -> str | None:
        """Why a URL may not use `port`, or None."""
        if port == 0:
            return "port 0 is not allowed"
        if self.ports is not None and port not in self.ports:
            shown = ",".join(str(p) for p in sorted(self.ports))
            return f"port {port} is not allowed (JOBHOST_NOTIFY_ALLOW_PORTS: {shown})"
        return None

    def refusal(self, address: str) -> str | None:
        """Why connecting to `address` (an IP, maybe with a %zone) is refused, or None."""
        try:
            addr = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return f"{address!r} is not an IP address"
        forms = _embedded(addr)
        if any(form in net for form in forms for net in self.allow if form.version == net.version):
            return None
        for form in forms:
            why = _why(form)
            if why is not None:
                shown = str(addr) if form == addr else f"{addr} (that is {form})"
                return f"{shown} is {why}"
        return None

    def check_url(self, url: str) -> SplitResult:
        """The URL's parts, or Refused for a scheme, host or literal address the guard refuses."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise Refused(f"{url!r} is not a valid URL: {exc}") from exc
        if parts.scheme.lower() not in SCHEMES:
            raise Refused(f"scheme {parts.scheme or '(none)'!r} is not allowed: use http or https")
        host = (parts.hostname or "").rstrip(".").lower()
        if not host:
            raise Refused(f"{url!r} has no host")
        default = 443 if parts.scheme.lower() == "https" else 80
        why_port = self.port_refusal(default if port is None else port)
        if why_port:
            raise Refused(why_port)
        if host in METADATA_NAMES:
            raise Refused(f"{host} is a cloud metadata service")
        literal = _literal(host)
        if literal is not None:
            why = self.refusal(literal)
            if why:
                raise Refused(why)
        elif _looks_numeric(host):
            raise Refused(f"{host!r} is an ambiguous IPv4 spelling: write the dotted quad")
        return parts

    def check_addresses(self, host: str, addresses: Iterable[str]) -> None:
        """Refused when any address a name resolved to is refused (one bad answer is enough:
        the connection could take any of them)."""
        for address in addresses:
            why = self.refusal(address)
            if why:
                raise Refused(f"{host} resolves to {why}")

    def socket_factory(self, addr_info: tuple[object, ...]) -> socket.socket:
        """For aiohttp's TCPConnector(socket_factory=...): checks the address the socket is about
        to connect to, after every resolution, then makes the socket."""
        family, type_, proto, _, sockaddr = addr_info
        assert isinstance(sockaddr, tuple)
        why = self.refusal(str(sockaddr[0])) or self.port_refusal(int(sockaddr[1]))
        if why:
            raise Refused(f"connection refused by the SSRF guard: {why}")
        return socket.socket(family, type_, proto)  # type: ignore[arg-type]

    def check_destination_url(self, url: str, *, resolve: bool = True) -> None:
        """For a subscription being saved: the URL, then (blocking) what its name resolves to
        now; a name that does not resolve yet is accepted (it is checked again at send time).
        Raises ValidationFailed (422) pointing at /destination/url."""
        try:
            parts = self.check_url(url)
            host = parts.hostname or ""
            if resolve and _literal(host) is None:
                try:
                    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
                    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                except (OSError, UnicodeError):
                    return
                self.check_addresses(host, [str(i[4][0]) for i in infos])
        except Refused as exc:
            raise ValidationFailed(
                "destination", [FieldError("/destination/url", f"refused by the SSRF guard: {exc}")]
            ) from exc


def _literal(host: str) -> str | None:
    """The host as a canonical IP address, or None when it is a name."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def _looks_numeric(host: str) -> bool:
    """Hosts that inet_aton would read as an IPv4 address (127.1, 2130706433, 0x7f.1, 0177.0.0.1)
    or that end in a numeric label, which no real name does."""
    try:
        socket.inet_aton(host)
        return True
    except OSError:
        pass
    last = host.rsplit(".", 1)[-1]
    return last.isdigit() or (last.startswith("0x") and _is_hex(last[2:]))


def _is_hex(text: str) -> bool:
    return bool(text) and all(c in "0123456789abcdef" for c in text)
