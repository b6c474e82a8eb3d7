"""HOST and HOST:PORT in a monitor's URL: validated and normalised, for every kind.

Pure (no lookups): `url add` refuses a malformed address with one line (BadInput, exit 2)
before anything is written. http(s) URLs (urlspec.py) and the `tcp://HOST:PORT` and
`tls://HOST:PORT` kinds share the host rules: IDNA-encoded, lower case, an IPv6 literal in
brackets.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from ..errors import BadInput

_HOST_CHARS = re.compile(r"[A-Za-z0-9._-]+")     # a host name once IDNA-encoded
MAX_HOST_NAME = 253     # RFC 1035: 255 bytes on the wire; no longer name resolves


def normalise_host(host: str) -> str:
    """A host as it goes into a normalised URL: IDNA and lower case, an IPv6 literal bracketed.

    The IDNA codec refuses an empty label or one over 63 characters; a label may not start
    with a hyphen (RFC 1123). Underscores are let through: internal names have them, and the
    resolver, not this check, is the judge of what exists.
    """
    if ":" in host:                                  # IPv6 literal
        return f"[{host}]"
    try:
        encoded = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise BadInput(f"URL host {host!r} is not a valid host name") from None
    if encoded.startswith(".") or ".." in encoded or not _HOST_CHARS.fullmatch(encoded) \
            or len(encoded.removesuffix(".")) > MAX_HOST_NAME or encoded.startswith("-") or ".-" in encoded:
        raise BadInput(f"URL host {host!r} is not a valid host name")
    return encoded.lower()


def normalise_host_port(raw: str, scheme: str) -> str:
    """`SCHEME://HOST:PORT`, the port required, nothing else (no path, query or userinfo)."""
    example = f"{scheme}://HOST:PORT"
    if not raw[len(scheme) + 1:].startswith("//"):
        raise BadInput(f"URL must look like {example}")
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        raise BadInput(f"URL must look like {example} with a port between 1 and 65535") from None
    if "@" in parts.netloc:
        raise BadInput(f"a {scheme}:// URL takes no user or password ({example})")
    if parts.path not in ("", "/") or parts.query or parts.fragment or raw.endswith(("?", "#")):
        raise BadInput(f"a {scheme}:// URL has no path, query or fragment ({example})")
    if not parts.hostname:
        raise BadInput(f"URL has no host ({example})")
    if port is None or port == 0:
        raise BadInput(f"a {scheme}:// URL needs a port between 1 and 65535 ({example})")
    return f"{scheme}://{normalise_host(parts.hostname)}:{port}"


def host_port(url: str) -> tuple[str, int]:
    """(host, port) of a normalised `SCHEME://HOST:PORT` (an IPv6 literal without its brackets)."""
    parts = urlsplit(url)
    return parts.hostname, parts.port


def literal_version(host: str) -> int | None:
    """4 or 6 when `host` is an IP address literal (without brackets); None for a name."""
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return None
