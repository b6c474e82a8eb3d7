"""web.auth and web.public: who may see what (a pure ASGI middleware, no framework import).

web.auth is space-separated entries, each `token:SECRET` (an `Authorization: Bearer SECRET`
header) or `basic:USER:PASSWORD` (HTTP basic auth; one entry per user). Any one matching
entry lets a request in. Paths in web.public (badges by default) stay open.
"""

import base64
import hmac
from dataclasses import dataclass, field

REALM = "sitewatch"


@dataclass(frozen=True)
class Access:
    tokens: tuple[str, ...] = ()
    users: dict = field(default_factory=dict)     # user -> password

    @property
    def enabled(self) -> bool:
        return bool(self.tokens or self.users)


def parse_auth(text: str | None) -> Access:
    """Parse web.auth; ValueError naming the bad entry (by position: it may hold a secret)."""
    if text is None or not text.strip():
        return Access()
    tokens, users = [], {}
    for number, entry in enumerate(text.split(), 1):
        kind, _, rest = entry.partition(":")
        if kind == "token" and rest:
            tokens.append(rest)
        elif kind == "basic" and ":" in rest and rest.partition(":")[0] and rest.partition(":")[2]:
            user, _, password = rest.partition(":")
            users[user] = password
        else:
            raise ValueError(f"entry {number} must be token:SECRET or basic:USER:PASSWORD")
    return Access(tuple(tokens), users)


def redact_auth(text: str) -> str:
    """web.auth with every secret replaced: `token:*** basic:alice:***`."""
    shown = []
    for entry in text.split():
        kind, _, rest = entry.partition(":")
        if kind == "basic" and ":" in rest:
            shown.append(f"basic:{rest.partition(':')[0]}:***")
        else:
            shown.append(f"{kind}:***" if kind in ("token", "basic") else "***")
    return " ".join(shown)


def parse_public(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in (text or "").split(",") if p.strip())


def is_public(path: str, public: tuple[str, ...]) -> bool:
    for pattern in public:
        if pattern.endswith("*") and path.startswith(pattern[:-1]):
            return True
        if path == pattern:
            return True
    return False


def allowed(access: Access, authorization: str | None) -> bool:
    """Does this Authorization header match an entry? Compared in constant time."""
    if not authorization:
        return False
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        return any(hmac.compare_digest(credentials.encode(), token.encode()) for token in access.tokens)
    if scheme.lower() == "basic" and access.users:
        try:
            user, _, password = base64.b64decode(credentials, validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        expected = access.users.get(user)
        # Compare even for an unknown user, so timing does not tell which users exist.
        ok = hmac.compare_digest(password.encode(), (expected or "\0").encode())
        return ok and expected is not None
    return False


class AuthMiddleware:
    """Answer 401 unless the request is for a public path or carries a matching credential."""

    def __init__(self, app, access: Access, public: tuple[str, ...]):
        self.app, self.access, self.public = app, access, public

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.access.enabled or is_public(scope["path"], self.public):
            return await self.app(scope, receive, send)
        header = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value.decode("latin-1")
        if allowed(self.access, header):
            return await self.app(scope, receive, send)
        challenge = [(b"www-authenticate", f'Basic realm="{REALM}", charset="UTF-8"'.encode())] \
            if self.access.users else [(b"www-authenticate", f'Bearer realm="{REALM}"'.encode())]
        body = b'{"error": "authentication required"}' if scope["path"].startswith("/api/") \
            else b"authentication required\n"
        kind = b"application/json" if scope["path"].startswith("/api/") else b"text/plain; charset=utf-8"
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode()),
                                (b"cache-control", b"no-store"), *challenge]})
        await send({"type": "http.response.body", "body": body})
