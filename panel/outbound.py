"""Where customers' alert channels may connect: public addresses only, unless the operator
allows more (MPANEL_ALLOW_CHANNEL_NETWORKS).

A customer-admin's webhook or Apprise URL is a request from the panel's own network, and "Send
test alert" says whether it answered: without a rule it probes loopback, the database's port,
cloud metadata (169.254.169.254) and the LAN for them. So a customer-owned channel that reaches
a host of its target is refused when the host is (or resolves to) a non-public address:
loopback, private (RFC 1918, fc00::/7), link-local, unspecified, multicast, carrier-grade NAT
(100.64/10) or any other range that is not globally reachable. An IPv6 address that carries an
IPv4 one (::ffff:10.0.0.1, 6to4, NAT64, IPv4-compatible) is judged by the IPv4 address.

Checked twice: when the channel is saved (`problem_of_host`, for the page's message: a name that
does not resolve then is left to the second check) and at every connection (`guarded`): while
a customer's delivery runs, every socket the delivering code opens — urllib's, requests' under
Apprise, smtplib's, in Apprise's worker threads too (it copies the context into them) — is
checked on the address it actually connects to, after resolution. A name that resolved public
at save and private at send (DNS rebinding) is so refused at send; so is a redirect to one. The
connection goes to the address checked, with the name as Host header and TLS server name,
because the check sits on the socket's own connect(). A local (unix) socket is refused too.

Staff channels are not checked: the admin owns the network, and internal chat webhooks are a
legitimate use (docs/security.md).
"""
import contextlib
import contextvars
import dataclasses
import ipaddress
import socket

SETTING = "MPANEL_ALLOW_CHANNEL_NETWORKS"

# Non-public ranges with the name a refusal gives them; anything else not globally reachable
# (ipaddress.is_global) is refused as "reserved".
NON_PUBLIC = tuple((ipaddress.ip_network(network), label) for network, label in (
    ("0.0.0.0/8", "unspecified"), ("::/128", "unspecified"),
    ("127.0.0.0/8", "loopback"), ("::1/128", "loopback"),
    ("10.0.0.0/8", "private"), ("172.16.0.0/12", "private"), ("192.168.0.0/16", "private"),
    ("fc00::/7", "private"),
    ("169.254.0.0/16", "link-local"), ("fe80::/10", "link-local"),
    ("100.64.0.0/10", "carrier-grade NAT"),
    ("224.0.0.0/4", "multicast"), ("ff00::/8", "multicast"),
))
NAT64 = ipaddress.ip_network("64:ff9b::/96")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def judged(address):
    """The address a connection to `address` really reaches: the IPv4 address inside an IPv6
    one that carries it, else the address itself."""
    address = ipaddress.ip_address(address)
    if address.version == 6:
        inner = address.ipv4_mapped or address.sixtofour
        if inner is None and (address in NAT64 or address in IPV4_COMPATIBLE) \
                and int(address) > 1:
            inner = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if inner is not None:
            return inner
    return address


def classify(address):
    """None for a public address, else what it is ("loopback", "private", ...)."""
    address = judged(address)
    for network, label in NON_PUBLIC:
        if address.version == network.version and address in network:
            return label
    return None if address.is_global else "reserved"


@dataclasses.dataclass(frozen=True)
class Reach:
    """What one delivery may connect to: public addresses and the `allowed` networks."""
    allowed: tuple = ()  # ip_network objects (settings.allow_channel_networks)
    what: str = "channel target"  # how a refusal names the target ("webhook target")

    def problem(self, address, name=None):
        """None when `address` may be reached, else why not (a message fit for a person)."""
        address = ipaddress.ip_address(str(address).split("%")[0])
        if any(address.version == net.version and address in net for net in self.allowed):
            return None
        label = classify(address)
        if label is None:
            return None
        shown = f"{name} ({address})" if name and not _same(name, address) else name or address
        article = "an" if label[0] in "aeiou" else "a"
        return (f"{self.what} {shown} is {article} {label} address; customer channels may "
                f"reach only public addresses ({SETTING})")


def _same(name, address):
    try:
        return ipaddress.ip_address(name) == address
    except ValueError:
        return False


def resolve(host):
    """Every address `host` resolves to, as connecting would resolve it (getaddrinfo: also
    the decimal and octal forms, 2130706433 and 0177.0.0.1, are 127.0.0.1); [] when it does
    not resolve."""
    try:
        found = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return list(dict.fromkeys(info[4][0] for info in found))


def problem_of_host(host, reach):
    """At save: why `host` may not be a customer's target, or None. A name that does not
    resolve now passes: the check at connect time decides when it does."""
    if not host:
        return None
    for address in resolve(host.strip("[]")):
        problem = reach.problem(address, host)
        if problem:
            return problem
    return None


# ===== The check at connect time ================================================================

class Refused(Exception):
    """A guarded connection to a non-public address. Not an OSError, so that no library
    retries it as a network failure or takes the next address for it."""


class _Guard:
    def __init__(self, reach):
        self.reach = reach
        self.refused = None  # the first refusal's message, read after the delivery

    def check(self, family, address):
        if family not in (socket.AF_INET, socket.AF_INET6):
            problem = f"{self.reach.what} is a local socket; customer channels may reach " \
                      f"only public addresses"
        else:
            problem = self.reach.problem(address[0])
        if problem:
            self.refused = self.refused or problem
            raise Refused(problem)


_ACTIVE = contextvars.ContextVar("mpanel_outbound_guard", default=None)


def _checking(name, address_at):
    real = getattr(socket.socket, name)

    def method(sock, *args):
        guard = _ACTIVE.get()
        if guard is not None:
            guard.check(sock.family, args[address_at])
        return real(sock, *args)
    method.__name__ = name
    method.__wrapped__ = real
    return method


def _install():
    """Check every socket connect (and UDP sendto) while a guard is active in the calling
    context; nothing changes for code that runs outside one."""
    if getattr(socket.socket.connect, "__wrapped__", None) is None:
        socket.socket.connect = _checking("connect", 0)
        socket.socket.connect_ex = _checking("connect_ex", 0)
        socket.socket.sendto = _checking("sendto", -1)


_install()


@contextlib.contextmanager
def guarded(reach):
    """Run a delivery with every connection it makes checked against `reach` (None: staff,
    unchecked). Yields the guard: its `refused` names the first refusal, however the library
    in between reported it."""
    if reach is None:
        yield None
        return
    guard = _Guard(reach)
    token = _ACTIVE.set(guard)
    try:
        yield guard
    finally:
        _ACTIVE.reset(token)
