"""Managing URLs with the real `sitewatch` command: the happy paths (DESIGN.md sections 2, 6, 7)."""

import json
import re

import pytest

from sitewatch import config
from tests.conftest import count


def ok(result):
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stdout


def url_row(db, url):
    with db.cursor() as cur:
        cur.execute("SELECT id, url, period, regex, timeout, method, expected_status, max_redirects,"
                    " verify_tls, next_check_at, extract(epoch FROM next_check_at - now())"
                    " FROM url WHERE url = %s", (url,))
        row = cur.fetchone()
    if row is None:
        return None
    names = ["id", "url", "period", "regex", "timeout", "method", "expected_status", "max_redirects",
             "verify_tls", "next_check_at", "due_in"]
    return dict(zip(names, row, strict=True))


def listed(cli):
    return {row["url"]: row for row in json.loads(ok(cli("url", "list", "--json")))}


# --- add / list / remove ------------------------------------------------------------------------

def test_empty_list_says_how_to_add(cli):
    assert "no URLs monitored" in ok(cli("url", "list"))
    assert json.loads(ok(cli("url", "list", "--json"))) == []


def test_add_then_list_shows_the_url_with_its_settings(cli, db):
    out = ok(cli("url", "add", "HTTP://Example.COM:80", "-p", "30", "-r", "Exa.ple"))
    assert "added http://example.com/" in out
    ok(cli("url", "add", "https://example.org/health", "--period", "120"))

    table = ok(cli("url", "list"))
    lines = {line.split()[0]: line for line in table.splitlines()[1:]}
    assert set(lines) == {"http://example.com/", "https://example.org/health"}
    assert re.search(r"\s30\s", lines["http://example.com/"])
    assert "/Exa.ple/" in lines["http://example.com/"]
    assert "never" in lines["http://example.com/"]                 # not checked yet
    assert re.search(r"\s120\s", lines["https://example.org/health"])

    rows = listed(cli)
    assert rows["http://example.com/"]["period"] == 30
    assert rows["http://example.com/"]["regex"] == "Exa.ple"
    assert rows["https://example.org/health"]["period"] == 120
    assert rows["https://example.org/health"]["regex"] is None
    assert rows["https://example.org/health"]["timeout"] == 10.0              # check.timeout default
    assert rows["https://example.org/health"]["expected_status"] == "200-399"
    assert count(db, "url") == 2


def test_add_with_check_options_stores_them(cli, db):
    ok(cli("url", "add", "https://opts.example/", "--timeout", "2.5", "--method", "head",
           "--expected-status", "200-299,301", "--max-redirects", "0", "--no-verify-tls"))
    row = url_row(db, "https://opts.example/")
    assert row["timeout"] == 2.5
    assert row["method"] == "HEAD"
    assert row["expected_status"] == "200-299,301"
    assert row["max_redirects"] == 0
    assert row["verify_tls"] is False
    assert row["period"] == 60                       # check.default_period
    assert row["regex"] is None


def test_add_defaults_come_from_the_configuration(cli, db):
    ok(cli("url", "add", "http://conf.example/", env={"SITEWATCH_CHECK__DEFAULT_PERIOD": "45",
                                                      "HTTP_REQUEST_TIMEOUT": "4"}))
    row = url_row(db, "http://conf.example/")
    assert row["period"] == 45
    assert row["timeout"] == 4.0


def test_added_url_is_due_now(cli, db):
    ok(cli("url", "add", "http://now.example/", "-p", "300"))
    # A URL added by hand is checked within seconds, not after a period.
    assert abs(url_row(db, "http://now.example/")["due_in"]) < 5


def test_list_shows_the_last_result(cli, db):
    ok(cli("url", "add", "http://up.example/", "-p", "30"))
    ok(cli("url", "add", "http://down.example/", "-p", "30"))
    up_id = url_row(db, "http://up.example/")["id"]
    down_id = url_row(db, "http://down.example/")["id"]
    with db.cursor() as cur:
        cur.execute("""
            INSERT INTO task_result (url_id, scheduled_at, started_at, response_time_ms, status_code,
                                     regex_matched, ok, error_kind, error, checked_by)
            VALUES (%(up)s, now() - interval '60 s', now() - interval '60 s', 10, 500, NULL, false,
                    'status', 'status 500', 'test'),
                   (%(up)s, now() - interval '30 s', now() - interval '30 s', 12.4, 200, NULL, true,
                    NULL, NULL, 'test'),
                   (%(down)s, now() - interval '30 s', now() - interval '30 s', NULL, NULL, NULL, false,
                    'connect', 'connection refused', 'test')
        """, {"up": up_id, "down": down_id})
    rows = listed(cli)
    assert rows["http://up.example/"]["last_ok"] is True               # the newest result, not the older
    assert rows["http://up.example/"]["last_status_code"] == 200
    assert rows["http://down.example/"]["last_ok"] is False
    assert rows["http://down.example/"]["last_error_kind"] == "connect"

    lines = {line.split()[0]: line for line in ok(cli("url", "list")).splitlines()[1:]}
    assert re.search(r"\bUP\b", lines["http://up.example/"])
    assert re.search(r"\s200\s", lines["http://up.example/"])
    assert re.search(r"\bDOWN\b", lines["http://down.example/"])
    assert "connect: connection refused" in lines["http://down.example/"]


def test_remove_drops_the_url_and_its_pending_task_but_keeps_history(cli, db):
    ok(cli("url", "add", "http://gone.example/", "-p", "30"))
    ok(cli("url", "add", "http://stays.example/", "-p", "30"))
    gone = url_row(db, "http://gone.example/")["id"]
    stays = url_row(db, "http://stays.example/")["id"]
    with db.cursor() as cur:
        cur.execute("INSERT INTO task (url_id, scheduled_at, available_at) VALUES (%s, now(), now()),"
                    " (%s, now(), now())", (gone, stays))
        cur.execute("INSERT INTO task_result (url_id, scheduled_at, started_at, ok, checked_by)"
                    " VALUES (%s, now() - interval '30 s', now() - interval '30 s', true, 'test')", (gone,))

    out = ok(cli("url", "remove", "HTTP://GONE.example:80"))          # any spelling of the URL
    assert "removed http://gone.example/" in out

    assert url_row(db, "http://gone.example/") is None
    assert "http://gone.example/" not in listed(cli)
    with db.cursor() as cur:
        cur.execute("SELECT url_id FROM task ORDER BY url_id")
        assert cur.fetchall() == [(stays,)]                            # only the other URL's task is left
        cur.execute("SELECT count(*) FROM task_result WHERE url_id = %s", (gone,))
        assert cur.fetchone()[0] == 1                                  # its history is kept

    # Adding it again starts afresh.
    ok(cli("url", "add", "http://gone.example/"))
    assert url_row(db, "http://gone.example/")["id"] != gone


def test_list_and_add_redact_credentials_and_query(cli):
    out = ok(cli("url", "add", "http://user:canary@h.example/?token=canary2", "-p", "30"))
    assert "h.example" in out and "canary" not in out
    for args in (["url", "list"], ["url", "list", "--json"]):
        result = cli(*args)
        text = ok(result) + result.stderr
        assert "h.example" in text
        assert "canary" not in text


# --- import -----------------------------------------------------------------------------------------

def test_import_yaml_with_check_options(cli, db, tmp_path):
    path = tmp_path / "urls.yaml"
    path.write_text(
        "- url: https://dash.example/\n"
        "  period: 30\n"
        "  regex: 'Welcome'\n"
        "  expected-status: 200-299\n"
        "  max-redirects: 2\n"
        "  verify-tls: false\n"
        "  method: HEAD\n"
        "  timeout: 3\n"
        "- url: https://underscore.example/\n"
        "  expected_status: '200,301'\n"
        "  max_redirects: 0\n"
        "  verify_tls: true\n"
        "- http://plain.example/\n")
    out = ok(cli("url", "import", str(path)))
    assert "imported 3 URLs (3 new, 0 updated)" in out

    dash = url_row(db, "https://dash.example/")
    assert (dash["period"], dash["regex"], dash["expected_status"], dash["max_redirects"],
            dash["verify_tls"], dash["method"], dash["timeout"]) == (30, "Welcome", "200-299", 2, False,
                                                                     "HEAD", 3.0)
    under = url_row(db, "https://underscore.example/")
    assert (under["expected_status"], under["max_redirects"], under["verify_tls"]) == ("200,301", 0, True)
    assert under["period"] == 60                                        # missing keys take the defaults
    plain = url_row(db, "http://plain.example/")
    assert (plain["period"], plain["regex"], plain["method"]) == (60, None, "GET")


def test_import_one_url_per_line(cli, db, tmp_path):
    path = tmp_path / "urls.txt"
    path.write_text("# my sites\nhttp://one.example/\n\nhttps://TWO.example:443/path?q=1\r\nhttp://three.example\n")
    out = ok(cli("url", "import", str(path)))
    assert "imported 3 URLs (3 new, 0 updated)" in out
    assert sorted(listed(cli)) == ["http://one.example/", "http://three.example/",
                                   "https://two.example/path?***"]
    assert url_row(db, "https://two.example/path?q=1") is not None


def test_import_from_stdin(cli, db):
    out = ok(cli("url", "import", "-", input="- url: http://stdin.example/\n  period: 15\n"))
    assert "1 new" in out
    assert url_row(db, "http://stdin.example/")["period"] == 15
    out = ok(cli("url", "import", "-", input="http://stdin2.example/\n"))
    assert "1 new" in out
    assert count(db, "url") == 2


def test_import_is_an_upsert(cli, db, tmp_path):
    first = tmp_path / "first.yaml"
    first.write_text("- url: http://a.example/\n  period: 30\n"
                     "- url: http://b.example/\n  period: 60\n")
    assert "imported 2 URLs (2 new, 0 updated)" in ok(cli("url", "import", str(first)))
    b_slot = url_row(db, "http://b.example/")["next_check_at"]

    second = tmp_path / "second.yaml"
    second.write_text("- url: http://a.example/\n  period: 120\n"
                      "- url: http://b.example/\n  period: 60\n  regex: found\n"
                      "- url: http://c.example/\n")
    assert "imported 3 URLs (1 new, 2 updated)" in ok(cli("url", "import", str(second)))

    assert url_row(db, "http://a.example/")["period"] == 120
    b = url_row(db, "http://b.example/")
    assert b["regex"] == "found"
    assert b["next_check_at"] == b_slot           # same period: its schedule is not disturbed
    assert count(db, "url") == 3


def test_import_does_not_remove_urls_missing_from_the_file(cli, db):
    ok(cli("url", "add", "http://kept.example/"))
    ok(cli("url", "import", "-", input="http://new.example/\n"))
    assert set(listed(cli)) == {"http://kept.example/", "http://new.example/"}


def test_import_empty_file_imports_nothing(cli, db):
    assert "imported 0 URLs" in ok(cli("url", "import", "-", input="# nothing yet\n"))
    assert count(db, "url") == 0


def test_import_of_ten_thousand_urls(cli, db, tmp_path):
    path = tmp_path / "many.txt"
    path.write_text("".join(f"http://host{i}.example/page\n" for i in range(10_000)))
    out = ok(cli("url", "import", str(path), timeout=120))
    assert "imported 10000 URLs (10000 new, 0 updated)" in out
    assert count(db, "url") == 10_000


def test_import_spreads_first_checks_across_the_period(cli, db, tmp_path):
    path = tmp_path / "spread.yaml"
    path.write_text("".join(f"- url: http://s{i}.example/\n  period: 60\n" for i in range(1000)))
    ok(cli("url", "import", str(path)))
    with db.cursor() as cur:
        cur.execute("SELECT count(DISTINCT next_check_at), extract(epoch FROM max(next_check_at) -"
                    " min(next_check_at)), extract(epoch FROM min(next_check_at) - now()),"
                    " extract(epoch FROM max(next_check_at) - now()) FROM url")
        distinct, spread, first_in, last_in = cur.fetchone()
    assert distinct > 900                       # not all in the same instant
    assert spread > 30                          # over more than half the period
    assert -10 < first_in and last_in <= 60     # and all within one period from now


# --- config show, help, db migrate ---------------------------------------------------------------

def test_config_show_gives_each_value_and_its_source(cli, tmp_path):
    path = tmp_path / "sw.yaml"
    path.write_text("consumer:\n  concurrency: 7\ncheck:\n  timeout: 8\n")
    result = cli("--config", str(path), "--log-level", "warning", "config", "show",
                 env={"DB_DSN": "postgresql://postgres:canarypw@db.example:5432/sw",
                      "SITEWATCH_CHECK__TIMEOUT": "3", "MAX_PERIOD": "600"})
    out = ok(result)
    lines = {line.split(" = ")[0]: line for line in out.splitlines()}
    assert set(lines) == {s.name for s in config.SETTINGS}            # every setting is shown
    assert re.search(r"= 7\s+\(file " + re.escape(str(path)) + r"\)", lines["consumer.concurrency"])
    assert re.search(r"= 3(\.0)?\s+\(env SITEWATCH_CHECK__TIMEOUT\)", lines["check.timeout"])
    assert re.search(r"= 600\s+\(env MAX_PERIOD\)", lines["check.max_period"])
    assert re.search(r"= warning\s+\(flag --log-level\)", lines["log.level"])
    assert re.search(r"= 5\s+\(default\)", lines["check.min_period"])
    assert "(env DB_DSN)" in lines["database.dsn"] and "db.example" in lines["database.dsn"]
    assert "canarypw" not in out + result.stderr


def test_config_show_redacts_key_value_dsn_password(cli):
    result = cli("config", "show", env={"DB_DSN": "host=db.example user=sw password=canarypw dbname=sw"})
    out = ok(result)
    assert "host=db.example" in out
    assert "canarypw" not in out + result.stderr


HELP_COMMANDS = [[], ["run"], ["url"], ["url", "add"], ["url", "remove"], ["url", "list"], ["url", "import"],
                 ["check"], ["db"], ["db", "migrate"], ["config"], ["config", "show"]]


def option_blocks(help_text):
    """{'--period': 'its help text', ...} from argparse's options section."""
    blocks, current = {}, None
    for line in help_text.splitlines():
        match = re.match(r"^  (-\S+(?:.*?))(?:\s{2,}|$)", line)
        if match:
            names = re.findall(r"--?[\w-]+", match.group(1))
            current = next((n for n in names if n.startswith("--")), names[0])
            blocks[current] = line
        elif current and line.startswith("    "):
            blocks[current] += " " + line.strip()
        else:
            current = None
    return blocks


@pytest.mark.parametrize("args", HELP_COMMANDS, ids=lambda a: " ".join(a) or "sitewatch")
def test_help_exits_0(cli, args):
    out = ok(cli(*args, "--help"))
    assert out.startswith("usage: sitewatch")


@pytest.mark.parametrize("args, options", [
    ([], ["--config", "--log-format", "--log-level"]),
    (["run"], ["--consumers", "--concurrency"]),
    (["url", "add"], ["--period", "--regex", "--timeout", "--method", "--expected-status", "--max-redirects",
                      "--verify-tls"]),
    (["check"], ["--regex", "--timeout", "--method", "--expected-status", "--max-redirects", "--verify-tls"]),
], ids=["sitewatch", "run", "url add", "check"])
def test_help_mentions_the_default_of_each_option(cli, args, options):
    blocks = option_blocks(ok(cli(*args, "--help")))
    for option in options:
        assert option in blocks, f"{option} missing from help of {args}"
        assert "default" in blocks[option], f"help of {option} does not say its default: {blocks[option]}"


def test_help_of_url_add_gives_the_default_values(cli):
    blocks = option_blocks(ok(cli("url", "add", "--help")))
    assert "60" in blocks["--period"]
    assert "10" in blocks["--timeout"]
    assert "200-399" in blocks["--expected-status"]


def test_help_of_url_import_describes_the_file(cli):
    out = ok(cli("url", "import", "--help"))
    for word in ("YAML", "one URL per line", "expected-status", "default"):
        assert word in out.replace("\n", " ")


def test_db_migrate_twice(cli, db):
    for _ in range(2):
        out = ok(cli("db", "migrate"))
        assert "schema at version" in out


def test_db_migrate_on_an_empty_database_then_use_it(cli, empty_dsn):
    env = {"DB_DSN": empty_dsn}
    for _ in range(2):
        ok(cli("db", "migrate", env=env))
    ok(cli("url", "add", "http://fresh.example/", env=env))
    assert "http://fresh.example/" in ok(cli("url", "list", env=env))
