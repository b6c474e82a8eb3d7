"""web.auth, web.tokens and web.public: who may see and change what (a pure ASGI middleware,
no framework import).

web.auth is space-separated entries, each `token:SECRET` (an `Authorization: Bearer SECRET`
header) or `basic:USER:PASSWORD` (HTTP basic auth; one entry per user). Any one matching
entry, or a web.tokens token (tokens.py), lets a read in. Paths in web.public (badges by
default) stay open. Writes take web.tokens tokens of scope write only: a browser never sends a
Bearer token by itself, so a page elsewhere cannot make a visitor's browser write.
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


WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
AUTH_FAILURES_PER_MINUTE = 10     # failed authentications a client address may make a minute; then 429


class AuthMiddleware:
    """Who may do what, before any handler runs.

    * A read (GET, HEAD) is open unless web.auth is set; then it needs a web.auth entry or a
      web.tokens token of either scope. Paths in web.public stay open.
    * A write (POST, PUT, PATCH, DELETE under /api/) needs a web.tokens token of scope write:
      401 without one, 403 with a read token. Without any write token configured the write API
      does not exist: 404, so a server that never opted in offers nothing to probe.
    * Failed authentications are counted per client address (`failures`, a RateLimiter): past
      AUTH_FAILURES_PER_MINUTE every request of that address that needs credentials is answered
      429 until the bucket refills, even with a right one, so guessing stays slow.

    The token's name travels to the handler as scope["state"]["actor"] (the audit log's who).
    """

    def __init__(self, app, access: Access, public: tuple[str, ...], tokens=(), failures=None):
        self.app, self.access, self.public, self.tokens = app, access, public, tuple(tokens)
        self.failures = failures
        self.writes = any(token.writes for token in self.tokens)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        write = scope["method"] in WRITE_METHODS and path.startswith("/api/")
        if write and not self.writes:
            return await _json(send, 404, {"error": "not found: the write API is off (no web.tokens entry "
                                                    "has scope write)", "field": None})
        if not write and (not self.access.enabled or is_public(path, self.public)):
            return await self.app(scope, receive, send)
        client = (scope.get("client") or ("",))[0]
        wait = self.failures.blocked(client) if self.failures is not None else None
        if wait is not None:
            return await _json(send, 429, {"error": f"too many failed authentications from this address: "
                                                    f"retry in {wait} s", "field": None},
                               [(b"retry-after", str(wait).encode())])
        header = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value.decode("latin-1")
        from .tokens import match
        token = match(self.tokens, header)
        if write and token is not None:
            if not token.writes:
                return await _json(send, 403, {"error": f"the token {token.name!r} has scope read: writes "
                                                        f"need a token of scope write", "field": None})
            scope.setdefault("state", {})["actor"] = token.name
            return await self.app(scope, receive, send)
        if not write and (token is not None or allowed(self.access, header)):
            return await self.app(scope, receive, send)
        if self.failures is not None and header:      # no credentials at all is not a guess
            from .ratelimit import TooMany
            try:
                self.failures.take(client)
            except TooMany:
                pass
        if write:
            return await _json(send, 401, {"error": "authentication required: Authorization: Bearer TOKEN "
                                                    "(a web.tokens token of scope write)", "field": None},
                               [(b"www-authenticate", f'Bearer realm="{REALM}"'.encode())])
        challenge = [(b"www-authenticate", f'Basic realm="{REALM}", charset="UTF-8"'.encode())] \
            if self.access.users else [(b"www-authenticate", f'Bearer realm="{REALM}"'.encode())]
        body = b'{"error": "authentication required"}' if path.startswith("/api/") \
            else b"authentication required\n"
        kind = b"application/json" if path.startswith("/api/") else b"text/plain; charset=utf-8"
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode()),
                                (b"cache-control", b"no-store"), *challenge]})
        await send({"type": "http.response.body", "body": body})


async def _json(send, status: int, content: dict, headers=()) -> None:
    import json
    body = json.dumps(content).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store"), *headers]})
    await send({"type": "http.response.body", "body": body})
