"""A monitor's request options (DESIGN.md section 12): name, headers, body, bearer, client
certificate, IP version, validated; and the `${VAR}` references they hold.

Pure, like urlspec.py: a refusal raises BadInput with one line, before anything is written.
Headers, bearer and body are stored as written, `${VAR}` unexpanded: the checking host reads
the variables at check time (sitewatch/check/definition.py), so no secret is stored.
"""

import json
import os
import re

from .errors import BadInput
from .redact import REDACTED

MAX_NAME_LENGTH = 200
MAX_HEADERS = 50
MAX_HEADER_LENGTH = 8192        # one "Name: value" line
MAX_BODY_BYTES = 1 << 20        # a request body is a query, not an upload
MAX_PATH_LENGTH = 4096
IP_VERSIONS = {"4": 4, "6": 6, "any": None}
MAX_SEND_BYTES = 64 * 1024      # a tcp:// monitor's `send`: a line or two of a protocol
_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{2}|.?)", re.DOTALL)
_ESCAPES = {"r": b"\r", "n": b"\n", "t": b"\t", "0": b"\0", "\\": b"\\"}

# RFC 9110 token characters: a header name is one token.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
VARIABLE_BYTES = re.compile(rb"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# A `${` that does not open a well-formed reference: refused, so a typo is not sent literally.
_BROKEN_REFERENCE = re.compile(r"\$\{(?![A-Za-z_][A-Za-z0-9_]*\})")
# Header values shown as REDACTED everywhere (DESIGN.md section 12), lower-case.
SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


def validate_name(raw) -> str | None:
    """A monitor's name: printable text, never something a command would read as a URL, an id
    or a glob (every command taking a URL takes a name, `history` an id, `silence` a glob)."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise BadInput(f"name must be text, got {type(raw).__name__}")
    name = raw.strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        raise BadInput(f"name must be 1 to {MAX_NAME_LENGTH} characters, got {len(name)}")
    if not name.isprintable():
        raise BadInput(f"name {name!r} contains a control character")
    if "://" in name or "*" in name or (name.isascii() and name.isdigit()):
        raise BadInput(f"name {name!r} may not hold '://' or '*' nor be only digits "
                       f"(it would be read as a URL, a glob or an id)")
    return name


def _check_references(what: str, text: str) -> None:
    if _BROKEN_REFERENCE.search(text):
        raise BadInput(f"{what} has a '${{' that is not a ${{VAR}} reference (a letter or _, then "
                       f"letters, digits or _, then '}}')")


def _check_header_text(what: str, text: str) -> None:
    if any(ch in text for ch in "\r\n\x00"):
        raise BadInput(f"{what} contains a line break or NUL")
    try:
        text.encode("latin-1")      # what HTTP/1.1 sends a header as
    except UnicodeEncodeError:
        raise BadInput(f"{what} must be Latin-1 text (use percent or base64 encoding)") from None
    _check_references(what, text)


def parse_header(raw) -> str:
    """'Name: value' -> 'Name: value' with the name checked and the spaces around the value trimmed."""
    if not isinstance(raw, str):
        raise BadInput(f"header must be 'Name: value' text, got {type(raw).__name__}")
    name, colon, value = raw.partition(":")
    name, value = name.strip(), value.strip()
    if not colon:       # the whole line may be a secret ("Authorization Bearer ..."): not quoted
        raise BadInput("header must be 'Name: value': a header given has no ':'")
    if not _TOKEN.fullmatch(name):
        raise BadInput(f"header must be 'Name: value' with a name of letters, digits and -, got name {name!r}")
    line = f"{name}: {value}"
    if len(line) > MAX_HEADER_LENGTH:
        raise BadInput(f"header {name} is longer than {MAX_HEADER_LENGTH} characters")
    _check_header_text(f"header {name}", value)
    return line


def validate_headers(raw) -> list[str] | None:
    """A YAML map {Name: value}, or a list of 'Name: value' (the CLI's repeated --header)."""
    if raw is None or raw == [] or raw == {}:
        return None
    if isinstance(raw, dict):
        raw = [f"{name}: {'' if value is None else value}" for name, value in raw.items()]
    if not isinstance(raw, (list, tuple)):
        raise BadInput(f"headers must be a map of name: value, got {type(raw).__name__}")
    if len(raw) > MAX_HEADERS:
        raise BadInput(f"at most {MAX_HEADERS} headers, got {len(raw)}")
    lines = [parse_header(item) for item in raw]
    names = [header_name(line) for line in lines]
    for name in names:
        if name in ("host", "content-length", "transfer-encoding", "connection"):
            raise BadInput(f"header {name} is set by sitewatch itself")
    return lines


def header_name(line: str) -> str:
    return line.partition(":")[0].strip().lower()


def validate_body(raw, json_raw) -> tuple[bytes | None, bool]:
    """(body bytes, is JSON) from `body` (text or bytes) or `json` (text, or a YAML map/list)."""
    if raw is not None and json_raw is not None:
        raise BadInput("give body or json, not both")
    if json_raw is not None:
        if isinstance(json_raw, (dict, list)):
            text = json.dumps(json_raw, separators=(",", ":"), ensure_ascii=False)
        elif isinstance(json_raw, str):
            text = json_raw
            # ${VAR} may stand for a string's content or a whole value: check the shape with
            # each reference replaced by a number, which is valid in both places.
            try:
                json.loads(VARIABLE.sub("0", text))
            except ValueError as e:
                raise BadInput(f"json is not valid JSON: {e}") from None
        else:
            raise BadInput(f"json must be JSON text, got {type(json_raw).__name__}")
        _check_references("json", text)
        body = text.encode("utf-8")
        is_json = True
    elif raw is None or raw == "" or raw == b"":
        return None, False
    elif isinstance(raw, str):
        try:
            body = raw.encode("utf-8")
        except UnicodeEncodeError:
            raise BadInput("body is not valid UTF-8 text (use --body @FILE for bytes)") from None
        _check_references("body", raw)
        is_json = False
    elif isinstance(raw, bytes):
        body, is_json = raw, False
    else:
        raise BadInput(f"body must be text, got {type(raw).__name__}")
    if len(body) > MAX_BODY_BYTES:
        raise BadInput(f"body is larger than {MAX_BODY_BYTES} bytes ({len(body)})")
    return body, is_json


def read_body_argument(raw: str | None) -> str | bytes | None:
    """--body TEXT, or --body @FILE (its bytes as they are)."""
    if raw is None or not raw.startswith("@"):
        return raw
    path = raw[1:]
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BODY_BYTES + 1)
    except OSError as e:
        raise BadInput(f"cannot read body file {path}: {e.strerror}") from None
    if len(data) > MAX_BODY_BYTES:
        raise BadInput(f"body file {path} is larger than {MAX_BODY_BYTES} bytes")
    return data


def validate_send(text) -> bytes | None:
    """`send` as given (`PING\\r\\n`: escapes \\r \\n \\t \\0 \\\\ \\xHH) -> the bytes written.

    Bytes are taken as they are: the stored form, read back by `url update`.
    """
    if text is None or text == "" or text == b"":
        return None
    if isinstance(text, (bytes, bytearray, memoryview)):
        return bytes(text)
    if not isinstance(text, str):
        raise BadInput(f"send must be text, got {type(text).__name__}")

    data = bytearray()
    at = 0
    try:
        for match in _ESCAPE.finditer(text):
            data += text[at:match.start()].encode("utf-8")
            code = match.group(1)
            if code.startswith("x") and len(code) == 3:
                data.append(int(code[1:], 16))      # \xHH is one byte, whatever it is
            elif code in _ESCAPES:
                data += _ESCAPES[code]
            else:
                raise BadInput(f"send has an unknown escape {match.group(0)!r} "
                               f"(known: \\r \\n \\t \\0 \\\\ \\xHH)")
            at = match.end()
        data += text[at:].encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput("send is not valid UTF-8 text") from None
    if len(data) > MAX_SEND_BYTES:
        raise BadInput(f"send is longer than {MAX_SEND_BYTES} bytes ({len(data)})")
    return bytes(data)


def validate_bearer(raw) -> str | None:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise BadInput(f"bearer must be text, got {type(raw).__name__}")
    _check_header_text("bearer", raw)
    return raw.strip()


def validate_path(what: str, raw) -> str | None:
    """A file path on the checking hosts; not opened here (it need not exist where `url add` runs)."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or "\x00" in raw or len(raw) > MAX_PATH_LENGTH:
        raise BadInput(f"{what} must be a file path, got {raw!r}")
    return raw


def validate_ip_version(raw) -> int | None:
    key = str(raw).strip().lower() if raw is not None and not isinstance(raw, bool) else raw
    if key is None:
        return None
    if key not in IP_VERSIONS:
        raise BadInput(f"ip version must be 4, 6 or any, got {raw!r}")
    return IP_VERSIONS[key]


def variables(headers, bearer, body) -> list[str]:
    """The names of the ${VAR} references, in order of appearance, once each."""
    found = []
    for text in [*(headers or []), bearer or ""]:
        found += VARIABLE.findall(text)
    found += [name.decode("ascii") for name in VARIABLE_BYTES.findall(body or b"")]
    return list(dict.fromkeys(found))


def unset_variables(entry, env=None) -> list[str]:
    """The entry's ${VAR} names not set in `env` (this process's environment by default)."""
    env = os.environ if env is None else env
    return [name for name in variables(entry.headers, entry.bearer, entry.body) if name not in env]


def shown_header(line: str) -> str:
    """A stored header as it may be shown: the value of a secret header, or of one holding
    `${`, is REDACTED."""
    name, _, value = line.partition(":")
    if name.strip().lower() in SECRET_HEADERS or "${" in value:
        return f"{name}: {REDACTED}"
    return line


def shown_value(column: str, value):
    """One stored setting of a monitor (a url column) as it may be shown or kept in the audit log,
    JSON-ready: the URL's userinfo and query out (redact_url), the values of Authorization,
    Cookie and Proxy-Authorization headers, the bearer, and anything holding `${` REDACTED;
    bytes (the body) as text."""
    from .redact import redact_url
    if value is None:
        return None
    if column == "url":
        value = redact_url(value)
    elif column == "headers":
        value = [shown_header(line) for line in value]
    elif column == "bearer":
        value = REDACTED
    elif isinstance(value, (bytes, memoryview)):
        value = bytes(value)
        value = REDACTED if b"${" in value else value.decode("utf-8", "replace")
    if isinstance(value, str) and "${" in value:
        return REDACTED
    if isinstance(value, list):
        return [REDACTED if isinstance(item, str) and "${" in item else item for item in value]
    return value


def shown_settings(row: dict) -> dict:
    """The request settings of a stored url row as every output shows them: secret values out."""
    body = row.get("body")
    if body is not None:
        body = bytes(body)
        body = REDACTED if b"${" in body else body.decode("utf-8", "replace")
    return {
        "name": row.get("name"),
        "method": row.get("method"),
        "headers": [shown_header(line) for line in row.get("headers") or []],
        "body": body,
        "json": bool(row.get("body_json")),
        "bearer": REDACTED if row.get("bearer") else None,
        "client_cert": row.get("client_cert"),
        "client_key": row.get("client_key"),
        "ip_version": row.get("ip_version"),
    }
