"""Assertions (DESIGN.md section 12): the parser's refusals, and every subject and operator
judged by a real check of a real local server that serves JSON.

Checks go through probe.check, as the consumers run them; `sitewatch check` and `url add`
run as subprocesses where the command line is the subject.
"""

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sitewatch.assertions import AssertionSyntaxError, parse, parse_all
from sitewatch.check.probe import Target, check
from tests.conftest import clean_env, count

HEALTH = {"status": "ok", "version": "1.2.3", "count": 42, "ratio": 0.5, "flag": True, "nothing": None,
          "items": [{"name": "db", "up": True}, {"name": "cache", "up": False}], "tags": ["eu", "prod"],
          "checks": {"db": "up"}}
PAGES = {
    "/health": (200, "application/json", json.dumps(HEALTH).encode()),
    "/down": (503, "application/json", b'{"status": "down"}'),
    "/html": (200, "text/html; charset=utf-8", b"<h1>Down for maintenance</h1>"),
    "/notjson": (200, "application/json", b"{not json"),
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_HEAD(self):  # noqa: N802 - http.server's name
        self.do_GET(body=False)

    def do_GET(self, body=True):  # noqa: N802 - http.server's name
        if self.path == "/hop":
            self.send_response(302)
            self.send_header("Location", "/health")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        status, content_type, content = PAGES.get(self.path, (404, "text/plain", b"no"))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("X-Build", "1234")
        self.send_header("Set-Cookie", "session=s3cr3t-cookie-value")
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        if body:
            self.wfile.write(content)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def run(url, assertions=(), degraded=(), **options):
    return check(Target(url, timeout=5.0, assertions=parse_all(list(assertions)),
                        degraded=parse_all(list(degraded)), **options))


# --- every subject and operator, passing and failing ------------------------------------------

CASES = [
    # (path, expression, holds)
    ("/health", "status == 200", True),
    ("/health", "status != 200", False),
    ("/health", "status in 200-299,301", True),
    ("/down", "status in 200-299,301", False),
    ("/health", "response_time < 60000", True),
    ("/health", "response_time > 60000", False),
    ("/health", "response_time >= 0", True),
    ("/health", "response_time <= 0", False),
    ("/html", 'body contains "maintenance"', True),
    ("/html", 'body not contains "maintenance"', False),
    ("/html", "body matches /[Mm]aint[a-z]+/", True),
    ("/html", "body not matches /maint/", False),
    ("/html", 'body == "<h1>Down for maintenance</h1>"', True),
    ("/health", "header content-type contains \"json\"", True),
    ("/html", "header Content-Type contains \"json\"", False),
    ("/health", "header x-build == 1234", True),             # a header read as a number
    ("/health", "header x-build > 2000", False),
    ("/health", 'header x-build == "1234"', True),
    ("/health", "header x-build matches /^[0-9]+$/", True),
    ("/health", "header x-missing exists", False),
    ("/health", "header x-missing not exists", True),
    ("/health", 'json $.status == "ok"', True),
    ("/health", 'json $.status != "ok"', False),
    ("/health", "json $.count == 42", True),
    ("/health", "json $.count > 41.5", True),
    ("/health", "json $.count <= 41", False),
    ("/health", "json $.ratio < 1", True),
    ("/health", "json $.flag == true", True),
    ("/health", "json $.flag == 1", False),                  # JSON: true is not 1
    ("/health", "json $.flag != false", True),
    ("/health", "json $.nothing == null", True),
    ("/health", "json $.nothing exists", True),              # a node whose value is null exists
    ("/health", "json $.absent exists", False),
    ("/health", "json $.absent not exists", True),
    ("/health", 'json $.tags contains "prod"', True),
    ("/health", 'json $.tags not contains "us"', True),
    ("/health", 'json $.checks contains "db"', True),        # an object contains a key
    ("/health", 'json $.version matches /^1\\.2\\./', True),
    ("/health", 'json $.version not matches /^2/', True),
    ("/health", 'json $.version > "1.10"', True),            # strings compare as strings
    ("/health", "json $.count in 40-50", True),
    ("/health", 'json $.items[?@.up == false].name == "cache"', True),   # RFC 9535 filter
    ("/health", 'json $["checks"].db == "up"', True),
    ("/health", "len(json $.items) == 2", True),
    ("/health", "len(json $.items) > 2", False),
    ("/health", "len(json $.status) == 2", True),            # a string's length
    ("/health", "len(json $.count) exists", False),          # a number has no length
    ("/health", "redirects == 0", True),
    ("/hop", "redirects == 1", True),
    ("/hop", "redirects < 1", False),
    ("/health", "cert_days not exists", True),               # plain http: no certificate
    ("/health", "cert_days > 14", False),
]


@pytest.mark.parametrize(("path", "expression", "holds"), CASES)
def test_every_subject_and_operator(site, path, expression, holds):
    outcome = run(site + path, [expression], expected_status=((100, 599),))
    assert outcome.ok is holds, outcome.error
    assert outcome.degraded is False
    if holds:
        assert outcome.error_kind is None and outcome.error is None
    else:
        assert outcome.error_kind == "assertion"
        assert outcome.error.startswith(f"{expression}: got ")


def test_the_error_names_the_expression_and_the_actual_value(site):
    outcome = run(site + "/down", ['json $.status == "ok"'], expected_status=((100, 599),))
    assert (outcome.ok, outcome.error_kind, outcome.error) == (False, "assertion", 'json $.status == "ok": got "down"')
    outcome = run(site + "/health", ["len(json $.items) > 5"])
    assert outcome.error == "len(json $.items) > 5: got 2"


def test_the_first_failing_assertion_is_the_one_reported(site):
    outcome = run(site + "/health", ["status == 200", "json $.count == 1", 'json $.status == "x"'])
    assert outcome.error == "json $.count == 1: got 42"


def test_a_body_that_is_not_json_fails_json_assertions_clearly(site):
    outcome = run(site + "/notjson", ["json $.status exists"])
    assert outcome.error == "json $.status exists: got a body that is not JSON"
    outcome = run(site + "/notjson", ["status == 200", 'body contains "not json"'])
    assert outcome.ok


def test_a_head_response_has_no_body_for_json_assertions(site):
    outcome = run(site + "/health", ['json $.status == "ok"'], method="HEAD")
    assert not outcome.ok and outcome.error == 'json $.status == "ok": got no body'


def test_secret_headers_are_never_quoted(site):
    outcome = run(site + "/health", ['header set-cookie contains "nothing"'])
    assert outcome.error == 'header set-cookie contains "nothing": got ***'
    assert "s3cr3t" not in outcome.error


def test_status_and_regex_keep_their_error_kinds_before_assertions(site):
    outcome = run(site + "/down", ['json $.status == "ok"'])
    assert outcome.error_kind == "status"
    outcome = run(site + "/health", ['json $.status == "ok"'], regex="absent-word")
    assert outcome.error_kind == "regex"


def test_a_failing_degraded_expression_keeps_the_result_up_but_degraded(site):
    outcome = run(site + "/health", ['json $.status == "ok"'], ["json $.count < 10"])
    assert (outcome.ok, outcome.degraded, outcome.error_kind) == (True, True, None)
    assert outcome.error == "json $.count < 10: got 42"
    clean = run(site + "/health", ['json $.status == "ok"'], ["json $.count < 100"])
    assert (clean.ok, clean.degraded, clean.error) == (True, False, None)
    failed = run(site + "/health", ['json $.status == "down"'], ["json $.count < 10"])
    assert (failed.ok, failed.degraded, failed.error_kind) == (False, False, "assertion")


def test_cert_days_on_https(tmp_path_factory):
    import ssl

    from tests.httpfixture import HostileServer
    from tests.test_probe import _self_signed_cert
    cert, key = _self_signed_cert(tmp_path_factory.mktemp("tls"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with HostileServer(tls=context) as server:
        url = server.url("/ok")
        assert run(url, ["cert_days > 14", "cert_days exists"], verify_tls=False).ok
        outcome = run(url, ["cert_days > 60"], verify_tls=False)
        assert outcome.error in ("cert_days > 60: got 29", "cert_days > 60: got 30")


# --- the parser -------------------------------------------------------------------------------

BAD = [
    # (expression, column, what was expected)
    ("statuss == 200", 1, "a subject"),
    ("status === 200", 10, "a value"),
    ("status == \"200\"", 11, "a number"),
    ("status", 7, "an operator"),
    ("status contains 2", 8, "a comparison for the number status"),
    ("status in 300-200", 11, "a range with its low end first"),
    ("status in ok", 11, "a number or a range"),
    ("response_time < fast", 17, "a value"),
    ("body == 5", 9, 'a "string"'),
    ("body matches \"x\"", 14, "a /regex/"),
    ("body matches /(/", 14, "an RE2 regex"),
    ("body matches /open", 19, "a closing / of the regex"),
    ("header == 1", 8, "a header name"),
    ("json status == 1", 6, "a JSONPath starting with $"),
    ("json $.a[ == 1", 10, "an RFC 9535 JSONPath"),
    ("len(json $.a > 1", 14, ") closing len("),
    ("len $.a > 1", 5, "( after len"),
    ("status == 200 and more", 15, "the end of the expression"),
    ("json $.a < true", 12, 'a number or a "string"'),
    ('json $.a == "unterminated', 13, "a value"),
]


@pytest.mark.parametrize(("expression", "column", "expected"), BAD)
def test_a_bad_expression_is_refused_with_its_column_and_what_was_expected(expression, column, expected):
    with pytest.raises(AssertionSyntaxError) as refused:
        parse(expression)
    assert (refused.value.position + 1, refused.value.source) == (column, expression)
    assert refused.value.expected.startswith(expected)
    message = str(refused.value)
    assert message.startswith(f"bad expression {expression!r} at column {column}: expected {expected}")
    assert "\n" not in message


def test_expressions_are_kept_as_written_and_need_no_blanks_around_comparisons():
    assert [a.source for a in parse_all(["status   in 200-299", 'json $.a=="x"'])] == [
        "status   in 200-299", 'json $.a=="x"']
    parsed = parse("json $['a b'][?@.c == 1].d>=2")     # blanks inside brackets belong to the path
    assert (parsed.argument, parsed.op, parsed.value) == ("$['a b'][?@.c == 1].d", ">=", 2.0)


# --- the command line -------------------------------------------------------------------------

def sitewatch_check(tmp_path, *args):
    env = clean_env(tmp_path, DB_DSN="postgresql://postgres@127.0.0.1:1/none")
    return subprocess.run([sys.executable, "-m", "sitewatch", "check", *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)


def test_sitewatch_check_prints_each_assertion_with_its_verdict_and_actual_value(tmp_path, site):
    result = sitewatch_check(tmp_path, site + "/health", "--assert", 'json $.status == "ok"',
                             "--assert", "len(json $.items) > 5", "--degraded", "response_time < 60000")
    assert result.returncode == 1, result.stderr
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert 'pass  json $.status == "ok"  (got "ok")' in lines
    assert "FAIL  len(json $.items) > 5  (got 2)" in lines
    assert any(line.startswith("pass  response_time < 60000  (got ") for line in lines)
    assert "[assertion] len(json $.items) > 5: got 2" in result.stdout


def test_sitewatch_check_json_has_degraded(tmp_path, site):
    result = sitewatch_check(tmp_path, site + "/health", "--degraded", "json $.count < 10", "--json")
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["ok"] is True and outcome["degraded"] is True
    assert outcome["error"] == "json $.count < 10: got 42"


def test_url_add_refuses_a_bad_expression_and_writes_nothing(cli, db):
    result = cli("url", "add", "http://127.0.0.1:9/", "--assert", "status == 200", "--assert", "json $.a[ == 1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "sitewatch: error: assert: bad expression 'json $.a[ == 1' at column 10: expected an RFC 9535 JSONPath "
        "(unexpected token '=' in bracketed selection)"]
    result = cli("url", "add", "http://127.0.0.1:9/", "--degraded", "response_time <")
    assert result.returncode == 2 and "column 16" in result.stderr
    assert count(db, "url") == 0


def test_url_add_and_import_store_the_expressions(cli, db, tmp_path):
    result = cli("url", "add", "http://127.0.0.1:9/a", "--assert", "status == 200", "--assert",
                 'json $.status == "ok"', "--degraded", "response_time < 800")
    assert result.returncode == 0, result.stderr
    (tmp_path / "urls.yaml").write_text(
        "- url: http://127.0.0.1:9/b\n"
        "  assert:\n"
        "    - 'json $.status == \"ok\"'\n"
        "  degraded: response_time < 800\n")
    result = cli("url", "import", str(tmp_path / "urls.yaml"))
    assert result.returncode == 0, result.stderr
    with db.cursor() as cur:
        cur.execute("SELECT url, assertions, degraded FROM url ORDER BY url")
        assert cur.fetchall() == [
            ("http://127.0.0.1:9/a", ["status == 200", 'json $.status == "ok"'], ["response_time < 800"]),
            ("http://127.0.0.1:9/b", ['json $.status == "ok"'], ["response_time < 800"])]
    (tmp_path / "bad.yaml").write_text("- url: http://127.0.0.1:9/c\n  assert: ['status =! 200']\n")
    result = cli("url", "import", str(tmp_path / "bad.yaml"))
    assert result.returncode == 2 and "entry 1" in result.stderr and "column 8" in result.stderr
    assert count(db, "url") == 2
