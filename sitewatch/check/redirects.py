"""The redirect policy every engine follows, hop by hop.

Engines fetch one hop at a time and ask `Hops` where to go next, so the limit,
loop detection, the method a redirect keeps and where credentials may follow
are written once (libcurl's own following would differ in each: it keeps a
custom method on a 303, knows no loops, and its messages are its own).
"""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit, urlunsplit

import urllib3
from urllib3.util import Url, parse_url

from sitewatch.redact import redact_url

from .engine import Failure, Request

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Request headers that carry credentials: dropped, like the URL's userinfo, when a
# redirect leaves the host or goes from https down to http (what browsers and curl do).
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


# URLs that urllib3's parse_url leaves exactly as written (nothing to lower-case, IDNA-encode,
# percent-encode or resolve: no userinfo, no `%`, no dot segment, no fragment) and that Hops.parse
# accepts: split here for a fraction of parse_url's cost, which every check pays on every hop.
# Anything else takes parse_url; tests/test_probe.py checks that both agree.
_PLAIN_URL = re.compile(
    r"(https?)://([a-z0-9-]+(?:\.[a-z0-9-]+)*)(?::([1-9][0-9]{0,4}))?"
    r"((?:/(?!\.)[A-Za-z0-9\-_~!$&'()*+,;=:@.]*)*)(?:\?([A-Za-z0-9\-._~!$&'()*+,;=:@/?]+))?")


def parse_plain(url: str) -> Url | None:
    """parse_url's answer for a plain URL (see _PLAIN_URL); None for any other."""
    match = _PLAIN_URL.fullmatch(url)
    if match is None:
        return None
    scheme, host, port, path, query = match.groups()
    if port is not None and int(port) > 65535:
        return None
    return Url(scheme, None, host, None if port is None else int(port), path or (None if query is None else ""),
               query, None)


def carry_userinfo(old_url: str, new_url: str) -> str:
    """`new_url`, with `old_url`'s userinfo when a redirect stays on the same host.

    urljoin keeps the userinfo only for relative Locations; `http://host/` ->
    `https://host/` must keep it too. Never carried to another host, nor from
    https down to http.
    """
    old, new = urlsplit(old_url), urlsplit(new_url)
    if "@" in new.netloc or "@" not in old.netloc or not _credentials_may_follow(old, new):
        return new_url
    userinfo = old.netloc.rpartition("@")[0]
    return urlunsplit(new._replace(netloc=f"{userinfo}@{new.netloc}"))


def _credentials_may_follow(old, new) -> bool:
    same_host = (old.hostname or "") == (new.hostname or "")
    return same_host and not (old.scheme == "https" and new.scheme != "https")


class Hops:
    """Where one fetch is: the URL, method, body and headers of the next hop."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.url = request.url
        self.method = request.method.upper()
        self.body = request.body
        self.headers = request.headers
        self.redirects = 0
        self._visited = {self.url}

    @property
    def bad_url_kind(self) -> str:
        # A bad first URL is a configuration problem ("protocol"); a bad Location
        # is the site's doing ("redirects").
        return "protocol" if self.redirects == 0 else "redirects"

    def parse(self, url: str) -> Url:
        """The hop's URL, parsed the same for every engine; a Failure when it cannot be fetched."""
        parts = parse_plain(url)
        if parts is not None:
            return parts
        kind = self.bad_url_kind
        try:
            parts = parse_url(url)
        except urllib3.exceptions.LocationParseError:
            raise Failure(kind, f"invalid URL {redact_url(url)}") from None
        if parts.scheme not in ("http", "https"):
            raise Failure(kind, f"unsupported URL scheme {parts.scheme!r} in {redact_url(url)}")
        if not parts.host:
            raise Failure(kind, f"no host in URL {redact_url(url)}")
        if parts.port == 0:  # `parts.port or 80` would quietly check another port
            raise Failure(kind, f"invalid port 0 in {redact_url(url)}")
        return parts

    def follow(self, status: int, location: str) -> None:
        """Move to the hop a redirect names; a Failure when it may not be followed."""
        try:
            next_url = carry_userinfo(self.url, urljoin(self.url, location))
            old, new = urlsplit(self.url), urlsplit(next_url)
        except ValueError:  # urljoin: "Invalid IPv6 URL", a port out of range, ...
            raise Failure("redirects", f"invalid redirect Location {redact_url(location)}") from None
        if self.redirects >= self.request.max_redirects:
            limit = self.request.max_redirects
            raise Failure("redirects", f"more than {limit} redirects (last: {redact_url(next_url)})")
        if next_url in self._visited:
            raise Failure("redirects", f"redirect loop: {redact_url(self.url)} leads back to {redact_url(next_url)}")
        self._visited.add(next_url)
        # RFC 9110 15.4: a 303 is fetched with GET; a POST answered by 301 or 302 too
        # (what every browser does); 307 and 308 keep the method and body.
        if (status == 303 and self.method != "HEAD") or (status in (301, 302) and self.method == "POST"):
            self.method, self.body = "GET", None
            self.headers = tuple((k, v) for k, v in self.headers
                                 if k.lower() not in ("content-type", "content-length"))
        if not _credentials_may_follow(old, new):
            self.headers = tuple((k, v) for k, v in self.headers if k.lower() not in CREDENTIAL_HEADERS)
        self.url = next_url
        self.redirects += 1
