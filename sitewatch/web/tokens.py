"""web.tokens: the write API's Bearer tokens (DESIGN.md section 12), a map from a name to
`{token, scope: read|write}`. The name is who the audit log says made a change; a `read` token
reads (as a web.auth entry does), a `write` token reads and writes. `${VAR}` in a token is read
from the environment when the configuration is loaded (config.load), so the secret need not be
in the file; a variable that is not set is a configuration error where the tokens are served
(`web`, `run` with web.listen), and a warning of `config show` elsewhere.
"""

import hmac
import re
from dataclasses import dataclass

SCOPES = ("read", "write")
MIN_TOKEN_LENGTH = 16       # a bearer token is a password nobody types: long enough not to guess
_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Token:
    name: str
    secret: bytes
    scope: str

    @property
    def writes(self) -> bool:
        return self.scope == "write"


def check(raw: dict) -> str | None:
    """A complaint about web.tokens' shape (completing "web.tokens ..."), or None."""
    for name, entry in raw.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            return "names must be 1 to 64 letters, digits or _ . @ -"
        if not isinstance(entry, dict) or set(entry) - {"token", "scope"} or "token" not in entry:
            return f"{name} must be a mapping with `token` and `scope` (read or write)"
        if entry.get("scope", "read") not in SCOPES:
            return f"{name}: scope must be read or write"
        if not isinstance(entry["token"], str) or not entry["token"].isprintable() or " " in entry["token"]:
            return f"{name}: token must be one word of printable text"
        if "${" not in entry["token"] and len(entry["token"]) < MIN_TOKEN_LENGTH:
            return f"{name}: token must be at least {MIN_TOKEN_LENGTH} characters"
    return None


def resolve(raw: dict, env) -> dict:
    """web.tokens with each `${VAR}` replaced from `env`; ValueError naming a variable not set."""
    resolved = {}
    for name, entry in raw.items():
        def value(match, name=name):
            if match.group(1) not in env:
                raise ValueError(f"{name}: ${{{match.group(1)}}} is not set in the environment")
            return env[match.group(1)]
        token = _VARIABLE.sub(value, entry["token"])
        if len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(f"{name}: the token from the environment must be at least {MIN_TOKEN_LENGTH} characters")
        resolved[name] = {"token": token, "scope": entry.get("scope", "read")}
    return resolved


def redact(value: dict) -> str:
    """How `config show` shows web.tokens: names and scopes, never a token."""
    return "{" + ", ".join(f"{name}: {{token: ***, scope: {entry.get('scope', 'read')}}}"
                           for name, entry in value.items()) + "}"


def parse(value: dict) -> tuple[Token, ...]:
    return tuple(Token(name, entry["token"].encode(), entry.get("scope", "read")) for name, entry in value.items())


def match(tokens: tuple[Token, ...], authorization: str | None) -> Token | None:
    """The token an `Authorization: Bearer ...` header carries, or None. Every token is compared,
    each in constant time (hmac.compare_digest), so timing tells neither which nor how much
    of one matched."""
    if not authorization or not tokens:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    given = credentials.strip().encode("latin-1", "replace")
    found = None
    for token in tokens:
        if hmac.compare_digest(given, token.secret) and found is None:
            found = token
    return found
