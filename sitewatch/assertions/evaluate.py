"""Judge parsed assertions against one response.

The response is anything with the attributes of check/engine.py's Response: status,
headers (lower-cased names), body (decoded bytes, already within the body cap, or None),
redirects, cert_days_left, response_time_ms, and `values` (a monitor kind's own subjects:
rcode, answer, loss; see grammar.VALUE_SUBJECTS).

The body is decoded to text at most once and parsed as JSON at most once per check, and only
when an assertion asks for it (orjson: a 20 KB document in tens of microseconds).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from .grammar import VALUE_SUBJECTS, Assertion

# Header values never shown, whatever an assertion asks (DESIGN.md section 12's redaction).
SECRET_HEADERS = frozenset({"authorization", "cookie", "set-cookie", "proxy-authorization"})
MAX_ACTUAL_CHARS = 80   # an actual value quoted in an error: enough to recognise, short to store
_MISSING = object()     # the subject has no value: no header, no node, no body, no status


@dataclass(frozen=True)
class Verdict:
    """One assertion judged: whether it held, the actual value as shown, and the error text."""

    assertion: Assertion
    passed: bool
    actual: str          # e.g. '"down"', '503', 'missing', 'not JSON'

    @property
    def message(self) -> str:
        return f"{self.assertion.source}: got {self.actual}"


class _Subjects:
    """What one response offers to the assertions, each part computed on first use."""

    def __init__(self, response) -> None:
        self.response = response
        self._text = _MISSING
        self._json = _MISSING
        self._values = None
        self.json_error: str | None = None

    def kind_value(self, name: str):
        """A monitor kind's own subject (Response.values), or _MISSING."""
        if self._values is None:
            self._values = dict(getattr(self.response, "values", ()))
        found = self._values.get(name)
        return _MISSING if found is None else found

    def text(self):
        if self._text is _MISSING:
            body = self.response.body
            self._text = None if body is None else body.decode("utf-8", errors="replace")
        return self._text

    def document(self):
        """The body as JSON, or _MISSING with json_error saying why."""
        if self._json is _MISSING and self.json_error is None:
            body = self.response.body
            if body is None:
                self.json_error = "no body"
            else:
                try:
                    self._json = orjson.loads(body)
                except orjson.JSONDecodeError:
                    self.json_error = "a body that is not JSON"
        return self._json

    def header(self, name: str):
        values = [value for key, value in self.response.headers if key == name]
        return ", ".join(values) if values else _MISSING   # RFC 9110: repeated fields join with ", "

    def value(self, assertion: Assertion):
        subject = assertion.subject
        response = self.response
        if subject == "status":
            found = response.status
        elif subject == "response_time":
            found = response.response_time_ms
        elif subject == "cert_days":
            found = response.cert_days_left
        elif subject == "redirects":
            found = response.redirects
        elif subject == "body":
            found = self.text()
        elif subject == "header":
            return self.header(assertion.argument)
        elif subject in VALUE_SUBJECTS:
            found = self.kind_value(subject)
            if subject == "answer" and found is not _MISSING:
                found = tuple(found) or _MISSING    # no records: nothing for an operator to hold on
            return found
        elif subject == "len" and assertion.path is None:     # len(answer): how many records
            found = self.kind_value("answer")
            return _MISSING if found is _MISSING else len(found)
        else:   # json, len
            document = self.document()
            if document is _MISSING:
                return _MISSING
            node = assertion.path.find_one(document)
            if node is None:
                return _MISSING
            if subject == "json":
                return node.value
            return len(node.value) if isinstance(node.value, (list, dict, str)) else _MISSING
        return _MISSING if found is None else found


def evaluate(assertions, response) -> list[Verdict]:
    """Every assertion judged, in order (none skipped: `sitewatch check` shows them all)."""
    subjects = _Subjects(response)
    return [_judge(assertion, subjects) for assertion in assertions]


def judge(assertions, degraded, response) -> tuple[Verdict | None, Verdict | None]:
    """(the first `assert` expression that fails, else None; the first `degraded` one that fails
    when every assertion held, else None). The hot path: it stops at the first failure, and
    both lists share one decoded body and one parsed JSON document."""
    subjects = _Subjects(response)
    for assertion in assertions:
        verdict = _judge(assertion, subjects)
        if not verdict.passed:
            return verdict, None
    for assertion in degraded:
        verdict = _judge(assertion, subjects)
        if not verdict.passed:
            return None, verdict
    return None, None


def explain(assertions, degraded, response) -> list[str]:
    """One line per expression, for `sitewatch check`: pass or FAIL, the expression, the actual
    value; a `degraded` expression is marked so."""
    verdicts = evaluate((*assertions, *degraded), response)
    lines = []
    for index, verdict in enumerate(verdicts):
        mark = "  [degraded]" if index >= len(assertions) else ""
        lines.append(f"{'pass' if verdict.passed else 'FAIL'}  {verdict.assertion.source}  "
                     f"(got {verdict.actual}){mark}")
    return lines


def _judge(assertion: Assertion, subjects: _Subjects) -> Verdict:
    actual = subjects.value(assertion)
    op = assertion.op
    if actual is _MISSING:
        if assertion.needs_json and subjects.json_error:
            shown = subjects.json_error
        elif assertion.subject == "len" and assertion.path is not None:
            shown = "no node with a length"
        elif assertion.subject == "answer":
            shown = "no records"
        else:
            shown = "missing"
        return Verdict(assertion, op == "not exists", shown)
    if assertion.subject == "answer":
        return Verdict(assertion, _answer_holds(op, actual, assertion.value), _show(assertion, list(actual)))
    return Verdict(assertion, _holds(op, actual, assertion.value), _show(assertion, actual))


def _answer_holds(op: str, records: tuple, expected) -> bool:
    """`answer OP VALUE` holds when it holds for one record; `!=`, `not contains` and `not matches`
    when it holds for none (`answer contains "192.0.2.1"`: a record holds that text)."""
    if op == "exists":
        return True
    positive = op.removeprefix("not ") if op != "!=" else "=="
    holds = any(_holds(positive, str(record), expected) for record in records)
    return holds if positive == op else not holds


def _holds(op: str, actual, expected) -> bool:
    if op == "exists":
        return True
    if op == "not exists":
        return False
    if op in ("==", "!="):
        return _equal(actual, expected) == (op == "==")
    if op in ("contains", "not contains"):
        return _contains(actual, expected) == (op == "contains")
    if op in ("matches", "not matches"):
        return isinstance(actual, str) and (expected.search(actual) is not None) == (op == "matches")
    if op == "in":
        number = _number(actual)
        return number is not None and any(low <= number <= high for low, high in expected)
    return _ordered(op, actual, expected)


def _number(value) -> float | None:
    """A number, or a header's text that reads as one ("content-length"); never a boolean."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _equal(actual, expected) -> bool:
    # JSON semantics: true is not 1, 1 equals 1.0; a header compared with a number reads as one.
    if isinstance(expected, bool) or expected is None or isinstance(actual, bool):
        return actual is expected if isinstance(actual, bool) or actual is None else False
    if isinstance(expected, float):
        return _number(actual) == expected
    return actual == expected


def _contains(actual, expected) -> bool:
    if isinstance(actual, str):
        return isinstance(expected, str) and expected in actual
    if isinstance(actual, list):
        return any(_equal(item, expected) for item in actual)
    if isinstance(actual, dict):
        return isinstance(expected, str) and expected in actual
    return False


def _ordered(op: str, actual, expected) -> bool:
    if isinstance(expected, str):
        if not isinstance(actual, str):
            return False
        left, right = actual, expected
    else:
        left, right = _number(actual), expected
        if left is None:
            return False
    return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op]


def _show(assertion: Assertion, actual) -> str:
    """The actual value as the error quotes it: JSON-like, short, never a secret header."""
    if assertion.subject == "header" and assertion.argument in SECRET_HEADERS:
        return "***"
    if assertion.subject == "body":
        return f"a body of {len(actual)} characters"
    if isinstance(actual, float) and assertion.subject == "response_time":
        return f"{actual:.0f} ms"
    try:
        shown = orjson.dumps(actual).decode()
    except TypeError:
        shown = repr(actual)
    if len(shown) > MAX_ACTUAL_CHARS:
        shown = shown[:MAX_ACTUAL_CHARS - 1] + "…"
    return shown
