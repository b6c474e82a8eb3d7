"""Bad input: one clear line on stderr, exit code 2, nothing written (DESIGN.md section 7).

Every case runs the real `sitewatch` command against a real database and checks
what a user sees (exit code, the one line on stderr) and what they would find
in the database afterwards (nothing changed).
"""

import string
from types import SimpleNamespace

import pytest
import re2
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sitewatch import urlspec
from sitewatch.errors import BadInput
from sitewatch.manage import importfile
from tests.conftest import count

SEEDED = "http://example.com/"


def snapshot(db):
    """Everything a bad command could have touched."""
    with db.cursor() as cur:
        cur.execute("SELECT url, period, regex, timeout, method, expected_status, max_redirects, verify_tls,"
                    " next_check_at FROM url ORDER BY url")
        urls = cur.fetchall()
        cur.execute("SELECT url_id, scheduled_at FROM task ORDER BY url_id")
        tasks = cur.fetchall()
    return urls, tasks, count(db, "url")


@pytest.fixture
def seeded(cli, db):
    """A database already monitoring one URL; returns its snapshot."""
    result = cli("url", "add", SEEDED)
    assert result.returncode == 0, result.stderr
    assert count(db, "url") == 1
    return snapshot(db)


def assert_one_line_error(result, *phrases, code=2):
    """The contract for a refused command: exit code, exactly one non-empty line, no traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{result.stderr}"
    line = lines[0]
    assert line.strip(), "the error line is blank"
    assert "Traceback" not in result.stderr
    assert "internal error" not in line, line
    for phrase in phrases:
        assert phrase.lower() in line.lower(), f"{phrase!r} not in {line!r}"
    return line


# --- URL validation ---------------------------------------------------------------------------

BAD_URLS = [
    pytest.param("ftp://example.com/", "scheme must be http, https", id="ftp"),
    pytest.param("file:///etc/passwd", "scheme must be http, https", id="file"),
    pytest.param("javascript:alert(1)", "scheme must be http, https", id="javascript"),
    pytest.param("example.com", "scheme must be http, https", id="no-scheme"),
    pytest.param("http://", "no host", id="no-host"),
    pytest.param("http:///path", "no host", id="no-host-with-path"),
    pytest.param("http://exa mple.com/", "whitespace or a control character", id="space"),
    pytest.param("http://example.com/a\tb", "whitespace or a control character", id="tab"),
    pytest.param("http://example.com/a\rb", "whitespace or a control character", id="cr"),
    pytest.param("http://example.com/a\nb", "whitespace or a control character", id="lf"),
    pytest.param("http://example.com/\x1b[31m", "whitespace or a control character", id="escape"),
    pytest.param("http://example.com/" + "a" * 2100, "longer than 2048", id="too-long"),
    pytest.param("http://example.com:0/", "port", id="port-0"),
    pytest.param("http://example.com:65536/", "port", id="port-65536"),
    pytest.param("http://example.com:http/", "port", id="port-not-a-number"),
    pytest.param("http://-a.example/", "not a valid host name", id="host-label-starts-with-hyphen"),
    pytest.param("http://" + "a" * 60 + ".b" * 97 + "/", "not a valid host name", id="host-over-253"),
    # urllib3 would check a.example while the list shows b.example.
    pytest.param("http://a.example\\@b.example/", "backslash", id="backslash-in-authority"),
]


@pytest.mark.parametrize("url, phrase", BAD_URLS)
def test_url_add_refuses_bad_url(cli, db, seeded, url, phrase):
    result = cli("url", "add", url)
    assert_one_line_error(result, phrase)
    assert snapshot(db) == seeded


@pytest.mark.parametrize("url, phrase", BAD_URLS[:6])
def test_url_remove_refuses_bad_url(cli, db, seeded, url, phrase):
    assert_one_line_error(cli("url", "remove", url), phrase)
    assert snapshot(db) == seeded


def test_nul_in_url_from_stdin_import_is_refused(cli, db, seeded):
    # NUL cannot travel in argv; a file (here standard input) can carry it.
    result = cli("url", "import", "-", input="http://ok.example/\nhttp://example.org/a\x00b\n")
    assert_one_line_error(result, "line 2", "control character")
    assert snapshot(db) == seeded


def test_nul_in_yaml_import_is_one_line(cli, db, seeded):
    result = cli("url", "import", "-", input="- url: http://ok.example/\n- url: http://example.org/a\x00b\n")
    assert_one_line_error(result, "<stdin>")
    assert snapshot(db) == seeded


@pytest.mark.parametrize("raw", ["http://example.com/\x00", "http://exa\x00mple.com/", "\x00http://a.b/"])
def test_normalise_url_refuses_nul(raw):
    with pytest.raises(BadInput, match="control character"):
        urlspec.normalise_url(raw)


def test_normalised_url_stays_within_the_length_limit():
    # IDNA encoding lengthens a non-ASCII host: a URL under the limit as typed may exceed it once
    # normalised, and would then be stored yet refused by every later command (url remove).
    prefix = "http://" + "ä" * 20 + ".example/"     # a host name stays under 253 characters
    raw = prefix + "p" * (urlspec.MAX_URL_LENGTH - len(prefix))
    assert len(raw) == urlspec.MAX_URL_LENGTH
    with pytest.raises(BadInput, match="longer than"):
        urlspec.normalise_url(raw)


# --- Period -----------------------------------------------------------------------------------

@pytest.mark.parametrize("period, phrase", [
    ("0", "between 5 and 300"),
    ("-5", "between 5 and 300"),
    ("abc", "whole number"),
    ("1.5", "whole number"),
    ("4", "between 5 and 300"),
    ("301", "between 5 and 300"),
])
def test_url_add_refuses_bad_period(cli, db, seeded, period, phrase):
    result = cli("url", "add", "http://new.example/", "-p", period)
    assert_one_line_error(result, "period", phrase)
    assert snapshot(db) == seeded


@pytest.mark.parametrize("env, period, phrase", [
    ({"MIN_PERIOD": "10"}, "9", "between 10 and 300"),
    ({"MAX_PERIOD": "100"}, "101", "between 5 and 100"),
    ({"SITEWATCH_CHECK__MIN_PERIOD": "30"}, "20", "between 30 and 300"),
    ({"SITEWATCH_CHECK__MAX_PERIOD": "60"}, "61", "between 5 and 60"),
])
def test_period_limits_follow_the_configuration(cli, db, seeded, env, period, phrase):
    result = cli("url", "add", "http://new.example/", "--period", period, env=env)
    assert_one_line_error(result, "period", phrase)
    assert snapshot(db) == seeded


def test_changed_period_limits_also_allow_what_defaults_refuse(cli, db, seeded):
    result = cli("url", "add", "http://new.example/", "-p", "600", env={"MAX_PERIOD": "3600"})
    assert result.returncode == 0, result.stderr
    assert count(db, "url") == 2


# --- Regex --------------------------------------------------------------------------------------

def test_regex_that_does_not_compile_says_why(cli, db, seeded):
    line = assert_one_line_error(cli("url", "add", "http://new.example/", "-r", "(abc"), "regex",
                                 "does not compile")
    assert "missing )" in line
    assert snapshot(db) == seeded


def test_regex_error_with_a_newline_stays_on_one_line(cli, db, seeded):
    assert_one_line_error(cli("url", "add", "http://new.example/", "-r", "(a\nb"), "does not compile",
                          "missing )")
    assert snapshot(db) == seeded


def test_absurdly_large_regex_is_refused(cli, db, seeded):
    assert_one_line_error(cli("url", "add", "http://new.example/", "-r", "a" * 5000), "regex",
                          "longer than 1000")
    assert snapshot(db) == seeded


def test_regex_too_big_for_re2_memory_budget_is_refused(cli, db, seeded):
    # Short to type, huge once compiled: RE2 refuses it instead of using unbounded memory.
    assert_one_line_error(cli("url", "add", "http://new.example/", "-r", "((a{100}){100}){100}"),
                          "regex", "does not compile")
    assert snapshot(db) == seeded


@pytest.mark.parametrize("option, value, phrase", [
    ("--timeout", "abc", "timeout"),
    ("--timeout", "0", "timeout"),
    ("--method", "BREW", "method"),
    ("--expected-status", "999", "expected status"),
    ("--expected-status", "abc", "expected status"),
    ("--max-redirects", "-1", "max redirects"),
    ("--max-redirects", "\u00b2", "max redirects"),
])
def test_url_add_refuses_bad_check_options(cli, db, seeded, option, value, phrase):
    assert_one_line_error(cli("url", "add", "http://new.example/", option, value), phrase)
    assert snapshot(db) == seeded


# --- Duplicates and unknown URLs ---------------------------------------------------------------

@pytest.mark.parametrize("spelling", ["http://example.com/", "http://example.com", "HTTP://EXAMPLE.com:80",
                                      "http://Example.COM:80/#fragment"])
def test_adding_a_url_already_monitored_is_refused(cli, db, seeded, spelling):
    line = assert_one_line_error(cli("url", "add", spelling, "-p", "30"), "already monitored")
    assert SEEDED in line
    assert snapshot(db) == seeded        # in particular the period is still 60


def test_removing_a_url_not_monitored_is_refused(cli, db, seeded):
    assert_one_line_error(cli("url", "remove", "http://other.example/"), "not monitored")
    assert snapshot(db) == seeded


def test_refusal_does_not_echo_credentials(cli, db):
    url = "http://user:canary1@h.example/?token=canary2"
    assert cli("url", "add", url).returncode == 0
    before = snapshot(db)
    result = cli("url", "add", url)
    assert_one_line_error(result, "already monitored")
    assert "canary" not in result.stderr + result.stdout
    result = cli("url", "remove", "http://user:canary1@other.example/?token=canary2")
    assert_one_line_error(result, "not monitored")
    assert "canary" not in result.stderr + result.stdout
    assert snapshot(db) == before


# --- Usage ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, phrase", [
    (["url", "add"], "required"),
    (["bogus"], "invalid choice"),
    (["url", "list", "--bogus"], "unrecognized arguments"),
    (["run", "--consumers", "many"], "invalid int value"),
])
def test_usage_errors_are_one_line(cli, db, seeded, args, phrase):
    assert_one_line_error(cli(*args), phrase)
    assert snapshot(db) == seeded


# --- Configuration ------------------------------------------------------------------------------

def test_unknown_key_in_config_file_is_named(cli, db, seeded, tmp_path):
    path = tmp_path / "sw.yaml"
    path.write_text("check:\n  timeout: 5\n  tiemout: 6\n")
    line = assert_one_line_error(cli("--config", str(path), "url", "add", "http://new.example/"),
                                 "unknown key", "check.tiemout")
    assert str(path) in line
    assert snapshot(db) == seeded


def test_unknown_section_in_config_file_is_named(cli, db, seeded, tmp_path):
    path = tmp_path / "sw.yaml"
    path.write_text("databse:\n  timeout: 5\n")
    assert_one_line_error(cli("--config", str(path), "url", "add", "http://new.example/"),
                          "unknown section", "databse")
    assert snapshot(db) == seeded


def test_wrong_type_in_config_file_names_key_value_and_file(cli, db, seeded, tmp_path):
    path = tmp_path / "sw.yaml"
    path.write_text("check:\n  timeout: soon\n")
    line = assert_one_line_error(cli("--config", str(path), "url", "add", "http://new.example/"),
                                 "check.timeout", "'soon'", f"file {path}")
    assert "number" in line
    assert snapshot(db) == seeded


def test_config_file_found_through_sitewatch_config_env(cli, db, seeded, tmp_path):
    path = tmp_path / "elsewhere.yaml"
    path.write_text("consumer:\n  concurrency: -3\n")
    assert_one_line_error(cli("url", "add", "http://new.example/", env={"SITEWATCH_CONFIG": str(path)}),
                          "consumer.concurrency", "-3", f"file {path}")
    assert snapshot(db) == seeded


def test_config_file_in_working_directory_is_read(cli, db, seeded, tmp_path):
    (tmp_path / "sitewatch.yaml").write_text("log:\n  level: loud\n")    # the cli fixture's cwd
    assert_one_line_error(cli("url", "add", "http://new.example/"), "log.level", "'loud'",
                          "file sitewatch.yaml")
    assert snapshot(db) == seeded


@pytest.mark.parametrize("var, value, key", [
    ("SITEWATCH_CHECK__TIMEOUT", "soon", "check.timeout"),
    ("SITEWATCH_CONSUMER__CONCURRENCY", "lots", "consumer.concurrency"),
    ("SITEWATCH_CHECK__VERIFY_TLS", "maybe", "check.verify_tls"),
    ("SITEWATCH_CHECK__EXPECTED_STATUS", "ok", "check.expected_status"),
    ("DB_TIMEOUT", "abc", "database.timeout"),
    ("MIN_PERIOD", "five", "check.min_period"),
    ("HTTP_REQUEST_TIMEOUT", "-1", "check.timeout"),
])
def test_wrong_type_from_environment_names_the_variable(cli, db, seeded, var, value, key):
    assert_one_line_error(cli("url", "add", "http://new.example/", env={var: value}),
                          key, repr(value), f"env {var}")
    assert snapshot(db) == seeded


def test_min_period_above_max_period_is_refused(cli, db, seeded):
    assert_one_line_error(cli("url", "list", env={"MIN_PERIOD": "100", "MAX_PERIOD": "50"}),
                          "check.min_period", "check.max_period", "env MIN_PERIOD")
    assert snapshot(db) == seeded


def test_missing_config_file_is_refused(cli, db, seeded, tmp_path):
    missing = tmp_path / "nope" / "sitewatch.yaml"
    assert_one_line_error(cli("--config", str(missing), "url", "add", "http://new.example/"),
                          "cannot read config file", str(missing), "no such file")
    assert_one_line_error(cli("url", "list", env={"SITEWATCH_CONFIG": str(missing)}),
                          "cannot read config file", str(missing))
    assert snapshot(db) == seeded


@pytest.mark.parametrize("text, line", [
    ("check:\n  timeout: 5\n  max_period: 10: 20\n", "line 3"),
    ("check:\n  timeout: 5\n\tmax_period: 10\n", "line 3"),
])
def test_malformed_config_yaml_names_the_line(cli, db, seeded, tmp_path, text, line):
    path = tmp_path / "sw.yaml"
    path.write_text(text)
    assert_one_line_error(cli("--config", str(path), "url", "add", "http://new.example/"), str(path), line)
    assert snapshot(db) == seeded


def test_config_file_that_is_not_a_mapping_is_refused(cli, db, seeded, tmp_path):
    path = tmp_path / "sw.yaml"
    path.write_text("- check\n- timeout\n")
    assert_one_line_error(cli("--config", str(path), "url", "list"), "mapping")
    assert snapshot(db) == seeded


@pytest.mark.parametrize("var", ["SITEWATCH_BOGUS", "SITEWATCH_CHECK__TIMEOTU", "SITEWATCH_CHECK_TIMEOUT"])
def test_unknown_sitewatch_environment_variable_is_refused(cli, db, seeded, var):
    assert_one_line_error(cli("url", "add", "http://new.example/", env={var: "1"}),
                          "unknown environment variable", var)
    assert snapshot(db) == seeded


# --- Import files ---------------------------------------------------------------------------------

IMPORT_CASES = [
    pytest.param("- url: http://a.example/\n  period: 30\n- url: http://b.example/\n  period: 1\n",
                 ["entry 2", "period"], id="yaml-bad-period"),
    pytest.param("- url: http://a.example/\n- url: http://b.example/\n  regex: '(x'\n",
                 ["entry 2", "does not compile"], id="yaml-bad-regex"),
    pytest.param("- url: http://a.example/\n- url: http://b.example/\n  colour: red\n",
                 ["entry 2", "unknown option", "colour"], id="yaml-unknown-key"),
    pytest.param("- url: http://a.example/\n- 42\n", ["entry 2", "mapping"], id="yaml-not-a-mapping"),
    pytest.param("- url: http://a.example/\n- period: 30\n", ["entry 2", "url is missing"], id="yaml-no-url"),
    pytest.param("http://a.example/\nhttp://b.example/\nftp://c.example/\n", ["line 3", "scheme"],
                 id="lines-bad-scheme"),
    pytest.param("# monitored\nhttp://a.example/\nhttp://b.example/ x\n", ["line 3", "whitespace"],
                 id="lines-whitespace"),
    pytest.param("http://a.example/\nhttp://b.example/\nhttp://A.EXAMPLE:80/\n",
                 ["line 3", "already listed", "line 1"], id="lines-duplicate"),
    pytest.param("- http://a.example/\n- url: http://b.example/\n- url: HTTP://a.example\n",
                 ["entry 3", "already listed", "entry 1"], id="yaml-duplicate"),
    pytest.param("url: http://a.example/\nperiod: 30\n", ["expected a YAML list"], id="yaml-not-a-list"),
    pytest.param("- url: http://a.example/\n- [http://b.example/\n", ["malformed YAML", "line"],
                 id="yaml-malformed"),
]


@pytest.mark.parametrize("text, phrases", IMPORT_CASES)
def test_bad_import_file_names_the_entry_and_writes_nothing(cli, db, seeded, tmp_path, text, phrases):
    path = tmp_path / "urls.txt"
    path.write_text(text)
    line = assert_one_line_error(cli("url", "import", str(path)), *phrases)
    assert str(path) in line
    # The valid entries before the bad one were not written either.
    assert snapshot(db) == seeded


@pytest.mark.parametrize("text, phrases", IMPORT_CASES[:1] + IMPORT_CASES[5:6])
def test_bad_import_from_stdin_writes_nothing(cli, db, seeded, text, phrases):
    assert_one_line_error(cli("url", "import", "-", input=text), "<stdin>", *phrases)
    assert snapshot(db) == seeded


def test_import_update_of_existing_url_is_not_written_when_a_later_entry_is_bad(cli, db, seeded):
    text = f"- url: {SEEDED}\n  period: 120\n- url: http://b.example/\n  period: 9999\n"
    assert_one_line_error(cli("url", "import", "-", input=text), "entry 2", "period")
    assert snapshot(db) == seeded        # the seeded URL keeps period 60


def test_import_of_missing_file_is_refused(cli, db, seeded, tmp_path):
    assert_one_line_error(cli("url", "import", str(tmp_path / "missing.yaml")), "cannot read", "missing.yaml")
    assert snapshot(db) == seeded


def test_import_of_non_utf8_file_is_refused(cli, db, seeded, tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("http://caf\xe9.example/\n".encode("latin-1"))
    assert_one_line_error(cli("url", "import", str(path)), "not UTF-8")
    assert snapshot(db) == seeded


# --- Runtime failure: the database cannot be reached --------------------------------------------

@pytest.mark.parametrize("bad_dsn", [
    "postgresql://postgres:canarypw@127.0.0.1:1/x",
    "host=127.0.0.1 port=1 user=postgres password=canarypw dbname=x",
    "postgresql://postgres@127.0.0.1:1/x?password=canarypw",
])
@pytest.mark.parametrize("args", [["url", "list"], ["url", "add", "http://new.example/"], ["db", "migrate"]])
def test_unreachable_database_is_exit_1_without_the_password(cli, bad_dsn, args):
    result = cli(*args, env={"DB_DSN": bad_dsn})
    assert_one_line_error(result, "cannot connect to the database", code=1)
    assert "canarypw" not in result.stderr + result.stdout


def test_unreachable_database_with_debug_log_still_hides_the_password(cli):
    result = cli("--log-level", "debug", "url", "list",
                 env={"SITEWATCH_DATABASE__DSN": "postgresql://postgres:canarypw@127.0.0.1:1/x"})
    assert result.returncode == 1
    assert "cannot connect to the database" in result.stderr
    assert "canarypw" not in result.stderr + result.stdout


# --- Properties of the validators ---------------------------------------------------------------

CHECK_DEFAULTS = SimpleNamespace(expected_status="200-399", default_period=60, min_period=5, max_period=300,
                                 timeout=10.0, max_redirects=5, verify_tls=True)
PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

url_like = st.builds(
    lambda scheme, userinfo, host, port, path, query: f"{scheme}{userinfo}{host}{port}{path}{query}",
    st.sampled_from(["http://", "https://", "HTTP://", "hTtPs://", "ftp://", "http:/", "http:", ""]),
    st.sampled_from(["", "user@", "user:pw@", "@", "a@b@"]),
    st.text(max_size=25) | st.text(alphabet=string.ascii_letters + string.digits + ".-_[]:%", max_size=25),
    st.sampled_from(["", ":", ":80", ":443", ":0", ":65536", ":x", ": 8"])
    | st.integers().map(lambda i: f":{i}"),
    st.just("") | st.text(max_size=20).map(lambda t: "/" + t),
    st.just("") | st.text(max_size=10).map(lambda t: "?" + t),
)
anything = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
                     st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                          max_size=2))


@PROPERTY_SETTINGS
@given(st.one_of(url_like, st.text(), anything))
def test_normalise_url_accepts_or_refuses_and_is_idempotent(raw):
    try:
        url = urlspec.normalise_url(raw)
    except BadInput as e:
        assert str(e) and "\n" not in str(e)
        return
    assert url.startswith(("http://", "https://"))
    assert len(url) <= urlspec.MAX_URL_LENGTH
    assert not any(c.isspace() or not c.isprintable() for c in url), url
    assert urlspec.normalise_url(url) == url


@PROPERTY_SETTINGS
@given(anything, st.integers(1, 1000), st.integers(1, 1000))
def test_validate_period_returns_an_int_in_range_or_refuses(raw, low, high):
    try:
        period = urlspec.validate_period(raw, low, high)
    except BadInput:
        return
    assert type(period) is int and low <= period <= high


@PROPERTY_SETTINGS
@given(st.one_of(st.text(max_size=40), st.text(alphabet="()[]{}*+?|\\^$.a1,-:", max_size=40), anything))
def test_validate_regex_returns_a_compiling_pattern_or_refuses(raw):
    try:
        pattern = urlspec.validate_regex(raw)
    except BadInput as e:
        assert "\n" not in str(e)
        return
    if pattern is not None:
        re2.compile(pattern)


@PROPERTY_SETTINGS
@given(st.dictionaries(st.sampled_from(urlspec.OPTION_NAMES + ["colour"]), anything), url_like)
def test_make_entry_returns_a_valid_entry_or_refuses(options, url):
    options.setdefault("url", url)
    try:
        entry = urlspec.make_entry(options, CHECK_DEFAULTS)
    except BadInput as e:
        assert "\n" not in str(e)
        return
    assert urlspec.normalise_url(entry.url) == entry.url
    assert 5 <= entry.period <= 300
    assert entry.method in urlspec.METHODS
    assert 0 < entry.timeout <= 3600
    assert urlspec.parse_expected_status(entry.expected_status)
    assert isinstance(entry.verify_tls, bool)


@PROPERTY_SETTINGS
@given(st.one_of(anything, st.text(alphabet=string.digits + string.whitespace + "\x1c\x1f\u00b2\u0663-.e",
                                   max_size=6)))
def test_check_option_validators_accept_or_refuse(raw):
    for validate in (urlspec.validate_timeout, urlspec.validate_method, urlspec.validate_max_redirects,
                     urlspec.parse_expected_status, lambda v: urlspec.validate_bool("verify_tls", v)):
        try:
            validate(raw)
        except BadInput as e:
            assert "\n" not in str(e)


@PROPERTY_SETTINGS
@given(st.text(max_size=200))
def test_parse_import_returns_entries_or_one_line_refusal(text):
    try:
        entries = importfile.parse_import(text, "f", CHECK_DEFAULTS)
    except BadInput as e:
        assert "\n" not in str(e)
        return
    assert len({e.url for e in entries}) == len(entries)


@pytest.mark.parametrize("doc", [
    "- https://a.example/\n- {url: https://b.example/, period: 5, verify-tls: no, regex: null}\n"
    "- url: https://c.example/\n  timeout: 1.5\n  expected-status: 200-299\n",
    "- &a https://a.example/\n- *a\n",            # anchors: the general path
    "- !!str 5\n- 5\n- '5'\n- 0x1F\n- 2026-01-01\n",  # tags and implicit types
    "- [https://a.example/]\n",                    # nesting
    "", "# only a comment\n", "url: https://a.example/\n", "- a\n---\n- b\n", "- a\n- [unclosed\n",
])
def test_import_yaml_reads_like_safe_load(doc):
    """The event-stream reader of the usual import shape gives what yaml.safe_load gives, errors too."""
    try:
        expected = yaml.safe_load(doc)
    except yaml.YAMLError as e:
        expected = type(e)
    try:
        got = importfile.load_yaml(doc)[0]
    except yaml.YAMLError as e:
        got = type(e)
    assert got == expected


def test_import_yaml_line_numbers_from_the_event_stream():
    doc = "# urls\n- https://a.example/\n- url: https://b.example/\n  period: 30\n\n- https://c.example/\n"
    assert importfile._load_flat_list(doc) is not None               # the fast path read it
    assert importfile.load_yaml(doc)[1] == [2, 3, 6]
