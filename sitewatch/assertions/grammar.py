"""The assertion language of DESIGN.md section 12: one expression, parsed and type-checked.

    SUBJECT OP VALUE    or    SUBJECT exists | SUBJECT not exists
    SUBJECT  status | response_time | body | header NAME | json PATH | len(json PATH)
             | cert_days | redirects | rcode | answer | len(answer) | loss
    OP       == != < <= > >= contains | not contains | matches | not matches | in
    VALUE    number | "string" | /RE2/ | true | false | null | status list (200-299,301)

The language is ten words and a few literals, so a small scanner reads it; everything with a
grammar of its own is handed to its library: PATH to an RFC 9535 JSONPath implementation
(jsonpath-rfc9535), /RE2/ to google-re2, "string" to the JSON decoder (its escapes).

Every refusal is an AssertionSyntaxError (a BadInput: exit 2, nothing written) whose one-line
message holds the expression, the 1-based column and what was expected there.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass

import jsonpath_rfc9535
import re2

from ..errors import BadInput
from ..regex import compile_regex

MAX_EXPRESSION_CHARS = 1000

NUMERIC_SUBJECTS = frozenset({"status", "response_time", "cert_days", "redirects", "len", "loss"})
TEXT_SUBJECTS = frozenset({"body", "header", "rcode"})
# A monitor kind's own subjects (check/kinds.py), read from Response.values: `rcode` the DNS
# response code as text (NOERROR), `answer` the records as text, `loss` a percentage.
VALUE_SUBJECTS = frozenset({"rcode", "answer", "loss"})
# `answer` is a list of records: an operator holds when it holds for one record (the negated
# ones: for none), so only the operators on one record's text apply.
ANSWER_OPS = frozenset({"==", "!=", "contains", "not contains", "matches", "not matches", "exists", "not exists"})
ORDER_OPS = frozenset({"<", "<=", ">", ">="})
EQUALITY_OPS = frozenset({"==", "!="})
# Longest first: "<=" before "<", "not contains" before "not exists".
_OPS = ("==", "!=", "<=", ">=", "<", ">", "not contains", "not matches", "not exists", "contains",
        "matches", "exists", "in")
_SIMPLE_SUBJECTS = ("status", "response_time", "body", "cert_days", "redirects", "rcode", "answer", "loss")
_BARE_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_]*")   # `rcode == NOERROR`: a response code unquoted
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")   # an RFC 9110 token
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_RANGE = re.compile(r"([0-9]+)(?:-([0-9]+))?")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_WORD = re.compile(r"[A-Za-z_]+")


class AssertionSyntaxError(BadInput):
    """A refused expression; the message names it, the column and what was expected."""

    def __init__(self, source: str, position: int, expected: str) -> None:
        self.source, self.position, self.expected = source, position, expected
        super().__init__(f"bad expression {source!r} at column {position + 1}: expected {expected}")


@dataclass(frozen=True)
class Assertion:
    """One parsed expression. `source` is what the user wrote (stored and shown as is)."""

    source: str
    subject: str           # status response_time body header json len cert_days redirects rcode answer loss
    op: str                # one of _OPS
    value: object = None   # float | str | bool | None | tuple of (low, high) | a compiled RE2
    argument: str | None = None   # the header name (lower case), the JSONPath text, or "answer" (len)
    path: object = None    # the compiled JSONPath query (json and len of json)

    @property
    def needs_json(self) -> bool:
        return self.path is not None

    @property
    def needs(self) -> str:
        """The subject a monitor kind must offer for this expression (check/kinds.py SUBJECTS)."""
        if self.subject == "len":
            return "json" if self.path is not None else "answer"
        return self.subject


class _Scanner:
    """A cursor over the expression; every `expect` failure is an AssertionSyntaxError."""

    def __init__(self, source: str) -> None:
        self.source, self.pos = source, 0

    def skip_space(self) -> None:
        while self.pos < len(self.source) and self.source[self.pos].isspace():
            self.pos += 1

    def at_end(self) -> bool:
        self.skip_space()
        return self.pos >= len(self.source)

    def fail(self, expected: str, position: int | None = None) -> AssertionSyntaxError:
        return AssertionSyntaxError(self.source, self.pos if position is None else position, expected)

    def match(self, pattern: re.Pattern) -> re.Match | None:
        self.skip_space()
        found = pattern.match(self.source, self.pos)
        if found:
            self.pos = found.end()
        return found

    def word(self, *words: str) -> str | None:
        """One of `words` (a phrase like "not contains" may hold spaces), ending at a boundary."""
        self.skip_space()
        rest = self.source[self.pos:]
        for candidate in words:
            parts = candidate.split(" ")
            pattern = r"\s+".join(re.escape(p) for p in parts)
            if candidate[-1].isalnum() or candidate[-1] == "_":
                pattern += r"(?![A-Za-z0-9_])"
            found = re.match(pattern, rest)
            if found:
                self.pos += found.end()
                return candidate
        return None

    def path(self, closing: str | None) -> tuple[str, int]:
        """A JSONPath: from `$` to the first blank, comparison sign or `closing` outside brackets."""
        self.skip_space()
        start = self.pos
        if not self.source.startswith("$", start):
            raise self.fail("a JSONPath starting with $")
        depth, quote, i = 0, None, start
        while i < len(self.source):
            char = self.source[i]
            if quote:
                if char == "\\":
                    i += 1
                elif char == quote:
                    quote = None
            elif char in "'\"":
                quote = char
            elif char in "[(":
                depth += 1
            elif char in "])":
                if depth == 0 and char == closing:
                    break
                depth -= 1
            elif depth == 0 and (char.isspace() or char in "=!<>"):
                break   # outside brackets a JSONPath has neither blanks nor comparison signs
            i += 1
        self.pos = i
        return self.source[start:i], start


def parse(source) -> Assertion:
    """Parse one expression; raises AssertionSyntaxError."""
    if not isinstance(source, str):
        raise BadInput(f"an assertion must be text, got {type(source).__name__}")
    if len(source) > MAX_EXPRESSION_CHARS:
        raise BadInput(f"an assertion is longer than {MAX_EXPRESSION_CHARS} characters ({len(source)})")
    return _parse(source)


@functools.lru_cache(maxsize=4096)
def _parse(source: str) -> Assertion:
    # Cached: checkers judge the same few stored expressions over and over.
    scan = _Scanner(source)
    subject, argument, path = _subject(scan)
    op_at = (scan.skip_space(), scan.pos)[1]
    op = scan.word(*_OPS)
    if op is None:
        raise scan.fail("an operator (== != < <= > >= contains, not contains, matches, not matches, in, "
                        "exists, not exists)")
    value = None
    if op not in ("exists", "not exists"):
        value = _value(scan, subject, op, op_at)
    if not scan.at_end():
        raise scan.fail("the end of the expression")
    return Assertion(source=source, subject=subject, op=op, value=value, argument=argument, path=path)


def parse_all(sources) -> tuple[Assertion, ...]:
    """A list of expressions (None: none); the first bad one is refused."""
    if sources is None:
        return ()
    if isinstance(sources, str):
        sources = [sources]
    if not isinstance(sources, (list, tuple)):
        raise BadInput(f"assertions must be a list of expressions, got {type(sources).__name__}")
    return tuple(parse(item) for item in sources)


def _subject(scan: _Scanner) -> tuple[str, str | None, object]:
    word = scan.word("len", *_SIMPLE_SUBJECTS, "header", "json")
    if word is None:
        raise scan.fail("a subject (status, response_time, body, header NAME, json PATH, len(json PATH), "
                        "cert_days, redirects, rcode, answer, len(answer), loss)")
    if word == "header":
        name = scan.match(_HEADER_NAME)
        if name is None:
            raise scan.fail("a header name")
        return "header", name.group().lower(), None
    if word == "json":
        text, at = scan.path(closing=None)
        return "json", text, _compile_path(scan, text, at)
    if word == "len":
        if not scan.match(re.compile(r"\(")):
            raise scan.fail("( after len")
        inside = scan.word("json", "answer")
        if inside is None:
            raise scan.fail("json PATH or answer inside len(...)")
        if inside == "answer":
            if not scan.match(re.compile(r"\)")):
                raise scan.fail(") closing len(")
            return "len", "answer", None
        text, at = scan.path(closing=")")
        if not scan.match(re.compile(r"\)")):
            raise scan.fail(") closing len(")
        return "len", text, _compile_path(scan, text, at)
    return word, None, None


def _compile_path(scan: _Scanner, text: str, at: int):
    try:
        return jsonpath_rfc9535.compile(text)
    except jsonpath_rfc9535.JSONPathError as exc:
        # The library says "..., line 1, column N" (1-based, within the path).
        column = re.search(r"column (\d+)", str(exc))
        where = at + int(column.group(1)) - 1 if column else at
        reason = str(exc.args[0]) if exc.args else "invalid"
        raise scan.fail(f"an RFC 9535 JSONPath ({reason})", position=min(where, len(scan.source))) from None


def _value(scan: _Scanner, subject: str, op: str, op_at: int):
    """The literal after `op`, of a type the subject and the operator accept."""
    scan.skip_space()
    at = scan.pos
    if subject == "answer" and op not in ANSWER_OPS:
        raise scan.fail("an operator for the records of answer (== != contains, not contains, matches, "
                        "not matches); len(answer) counts them", op_at)
    if op == "in":
        return _range_list(scan)
    if op in ("matches", "not matches"):
        if subject in NUMERIC_SUBJECTS:
            raise scan.fail(f"a comparison for the number {subject} (== != < <= > >= in)", op_at)
        return _regex(scan)
    if op in ("contains", "not contains"):
        if subject in NUMERIC_SUBJECTS:
            raise scan.fail(f"a comparison for the number {subject} (== != < <= > >= in)", op_at)
        value = _literal(scan)
        if subject in TEXT_SUBJECTS and not isinstance(value, str):
            raise scan.fail('a "string"', at)
        return value
    bare = _BARE_WORD.match(scan.source, scan.pos) if subject == "rcode" else None
    if bare and bare.group() not in ("true", "false", "null"):
        scan.pos = bare.end()
        return bare.group().upper()
    value = _literal(scan)
    if op in ORDER_OPS and (isinstance(value, bool) or value is None):
        raise scan.fail('a number or a "string"', at)
    if subject in NUMERIC_SUBJECTS and (isinstance(value, (bool, str)) or value is None) \
            and not (value is None and op in EQUALITY_OPS):
        raise scan.fail("a number", at)
    if subject in ("body", "answer", "rcode") and not isinstance(value, str):
        raise scan.fail('a "string"', at)
    return value


def _literal(scan: _Scanner):
    scan.skip_space()
    at = scan.pos
    number = scan.match(_NUMBER)
    if number:
        return float(number.group())
    string = scan.match(_STRING)
    if string:
        try:
            return json.loads(string.group())
        except ValueError:
            raise scan.fail('a "string" with JSON escapes', at) from None
    word = scan.word("true", "false", "null")
    if word is not None:
        return {"true": True, "false": False, "null": None}[word]
    raise scan.fail('a value (a number, a "string", true, false or null)')


def _regex(scan: _Scanner):
    scan.skip_space()
    at = scan.pos
    if not scan.source.startswith("/", at):
        raise scan.fail("a /regex/")
    i = at + 1
    while i < len(scan.source) and scan.source[i] != "/":
        i += 2 if scan.source[i] == "\\" else 1
    if i >= len(scan.source):
        raise scan.fail("a closing / of the regex", len(scan.source))
    pattern = scan.source[at + 1:i].replace("\\/", "/")
    scan.pos = i + 1
    try:
        return compile_regex(pattern)
    except re2.error as exc:
        why = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise scan.fail(f"an RE2 regex ({why})", at) from None


def _range_list(scan: _Scanner) -> tuple[tuple[float, float], ...]:
    """200-299,301: numbers and inclusive ranges (low first), comma separated."""
    ranges = []
    while True:
        scan.skip_space()
        at = scan.pos
        found = scan.match(_RANGE)
        if found is None:
            raise scan.fail("a number or a range like 200-299")
        low, high = int(found.group(1)), int(found.group(2) or found.group(1))
        if high < low:
            raise scan.fail("a range with its low end first", at)
        ranges.append((low, high))
        scan.skip_space()
        if not scan.source.startswith(",", scan.pos):
            return tuple(ranges)
        scan.pos += 1
