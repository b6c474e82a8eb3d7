"""Keep secrets out of logs, errors and output.

URLs may carry credentials in their userinfo or tokens in their query string;
DSNs carry database passwords. Everything that is printed or stored as text
goes through these functions first.
"""

import re
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

REDACTED = "***"

# key=value DSNs (libpq "conninfo" form): password='...' or password=...
_CONNINFO_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact_url(url: str) -> str:
    """Return `url` with its password/userinfo and query string replaced."""
    if "@" not in url and "?" not in url and "#" not in url:
        return url        # nothing to hide (and `status` redacts 100,000 URLs: skip the parse)
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
        query = REDACTED if parts.query else ""
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    except ValueError:
        # Unparseable: say nothing of it rather than risk a secret.
        return "<unparseable url>"


def redact_dsn(dsn: str) -> str:
    """Return `dsn` (URI or key=value form) with its password replaced."""
    if "://" in dsn:
        try:
            parts = urlsplit(dsn)
        except ValueError:
            return "<unparseable dsn>"
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:{REDACTED}@{hostport}" if ":" in userinfo else f"{user}@{hostport}"
        query = "&".join(f"{key}={REDACTED if key.lower() == 'password' else value}"
                         for key, value in parse_qsl(parts.query, keep_blank_values=True))
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    return _CONNINFO_PASSWORD.sub(lambda m: m.group(1) + REDACTED, dsn)


def written_passwords(dsn: str) -> list[str]:
    """The password of `dsn` as written (and percent-decoded), found even when libpq cannot parse the DSN."""
    found = []
    if "://" in dsn:
        netloc = re.split(r"[/?#]", dsn.split("://", 1)[1], maxsplit=1)[0]
        userinfo = netloc.rpartition("@")[0]
        if ":" in userinfo:
            password = userinfo.split(":", 1)[1]
            found += [password, unquote(password)]
        for key, value in re.findall(r"[?&]([^=&#]*)=([^&#]*)", dsn):
            if key.lower() == "password":
                found += [value, unquote(value)]
    for match in _CONNINFO_PASSWORD.finditer(dsn):
        value = match.group(2)
        found += [value, value.strip("'")]
    return [secret for secret in found if secret]


def scrub(text: str, secrets) -> str:
    """Replace every occurrence of each non-empty secret in `text`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def redact_text(text: str) -> str:
    """Redact every URL or DSN found inside free text (exception messages, tracebacks)."""
    def one(match):
        found = match.group(0)
        if found.lower().startswith(("postgres://", "postgresql://")):
            return redact_dsn(found)
        return redact_url(found)
    return _CONNINFO_PASSWORD.sub(lambda m: m.group(1) + REDACTED, _URL_IN_TEXT.sub(one, text))


def printable(text: str) -> str:
    """`text` with nothing a terminal, an XML document or a CSV reader would act on.

    Errors quote what a site sent (a redirect's Location, a status line); they are shown in
    terminals (`status`), in the Atom feed and in CSV. Whitespace other than a space (tab,
    CR, LF, form feed, NEL, line and paragraph separators) becomes a space; every other
    character Python does not call printable (C0 and C1 controls such as ESC, DEL, format
    characters such as the bidi overrides, lone surrogates, non-characters) is written as
    its escape, \\x1b, \\u202e. Idempotent: its output is printable.
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else " " if ch.isspace() else ascii(ch)[1:-1] for ch in text)
