"""Push monitors from files (issue 20): `url import` and `apply` take push://NAME entries with
`grace`, `cron` and `tz`. A new one gets no token printed (a file-driven run has no one to show
it to): the output says `sitewatch url show-token NAME` issues one. The real `sitewatch`
command on a real PostgreSQL."""

import hashlib
import json

from tests.conftest import count
from tests.test_push import PING
from tests.test_run import query, scalar

FILE = """\
- url: push://nightly
  period: 1d
  grace: 30m
- url: push://weekly
  name: weekly-report
  cron: '0 6 * * 1'
  tz: Europe/Berlin
- url: https://example.com/
"""
HINT = "{shown}: no ping URL is printed here; `sitewatch url show-token {name}` issues one"


def pushes(db) -> dict:
    """coalesce(name, url) -> (period, grace, cron, tz, token hash set, next_check_at - push_slot in s)."""
    rows = query(db, "SELECT coalesce(name, url), period, grace, cron, tz, push_token_hash IS NOT NULL,"
                     " extract(epoch FROM next_check_at - push_slot) FROM url WHERE push_slot IS NOT NULL")
    return {row[0]: row[1:] for row in rows}


def test_import_adds_push_monitors_with_no_token_printed_and_show_token_issues_one(cli, db):
    done = cli("url", "import", "-", input=FILE)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "imported 3 URLs (3 new, 0 updated)",
        HINT.format(shown="push://nightly", name="nightly"),
        HINT.format(shown="weekly-report", name="weekly-report"),
    ]
    found = pushes(db)
    assert found["push://nightly"] == (86400, 1800, None, None, True, 86400 + 1800)
    period, grace, cron, tz, hashed, deadline = found["weekly-report"]
    assert (cron, tz, hashed, grace, deadline) == ("0 6 * * 1", "Europe/Berlin", True, 3600, 3600)
    assert 7 * 86400 <= period <= 7 * 86400 + 3600        # the longest gap (a week, an hour more over DST)
    assert count(db, "url") == 3

    hidden = scalar(db, "SELECT encode(push_token_hash, 'hex') FROM url WHERE url = 'push://nightly'")
    shown = cli("url", "show-token", "nightly")
    assert shown.returncode == 0, shown.stderr
    token = PING.search(shown.stdout).group(1)
    stored = scalar(db, "SELECT encode(push_token_hash, 'hex') FROM url WHERE url = 'push://nightly'")
    assert stored == hashlib.sha256(token.encode()).hexdigest() != hidden


def test_import_again_updates_push_monitors_in_place(cli, db):
    assert cli("url", "import", "-", input=FILE).returncode == 0
    ids = dict(query(db, "SELECT coalesce(name, url), id FROM url"))
    done = cli("url", "import", "-", input=FILE.replace("grace: 30m", "grace: 10m"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["imported 3 URLs (0 new, 3 updated)"]   # no hint: none is new
    assert dict(query(db, "SELECT coalesce(name, url), id FROM url")) == ids
    assert pushes(db)["push://nightly"][1] == 600
    behind = scalar(db, "SELECT extract(epoch FROM now() - push_slot) FROM url WHERE url = 'push://nightly'")
    assert behind < 60                      # a new grace starts a new slot, as url update does


def test_import_refuses_a_push_entry_named_like_a_checked_monitor_and_writes_nothing(cli, db):
    assert cli("url", "add", "https://example.com/", "--name", "backup").returncode == 0
    before = query(db, "SELECT * FROM url")
    done = cli("url", "import", "-", input="- url: push://backup\n  name: backup\n- url: https://example.org/\n")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "sitewatch: error: backup: a monitor cannot change between push:// and a checked URL (it is "
        "https://example.com/): remove it and add the new one"]
    assert query(db, "SELECT * FROM url") == before


def test_import_refuses_a_checked_entry_named_like_a_push_monitor_and_writes_nothing(cli, db):
    assert cli("url", "import", "-", input=FILE).returncode == 0
    before = query(db, "SELECT * FROM url ORDER BY id")
    done = cli("url", "import", "-", input="- url: https://example.org/\n  name: weekly-report\n")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "sitewatch: error: weekly-report: a monitor cannot change between push:// and a checked URL (it is a "
        "push monitor): remove it and add the new one"]
    assert query(db, "SELECT * FROM url ORDER BY id") == before


def test_show_token_refuses_an_http_monitor(cli, db):
    assert cli("url", "add", "https://example.com/").returncode == 0
    done = cli("url", "show-token", "https://example.com/")
    assert done.returncode == 2 and "not a push monitor" in done.stderr


def apply(cli, tmp_path, text, *flags, env=None):
    path = tmp_path / "monitors.yaml"
    path.write_text(text)
    return cli("apply", str(path), *flags, env=env)


def test_apply_adds_push_monitors_then_has_no_changes_then_changes_grace(cli, db, tmp_path):
    dry = apply(cli, tmp_path, FILE, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == ["+ push://nightly", "+ weekly-report", "+ https://example.com/"]
    assert "show-token" not in dry.stderr and count(db, "url") == 0

    done = apply(cli, tmp_path, FILE)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["+ push://nightly", "+ weekly-report", "+ https://example.com/"]
    assert done.stderr.splitlines() == ["sitewatch: " + HINT.format(shown="push://nightly", name="nightly"),
                                        "sitewatch: " + HINT.format(shown="weekly-report", name="weekly-report")]
    found = pushes(db)
    assert found["push://nightly"] == (86400, 1800, None, None, True, 86400 + 1800)
    assert found["weekly-report"][2:5] == ("0 6 * * 1", "Europe/Berlin", True)

    again = apply(cli, tmp_path, FILE)
    assert (again.returncode, again.stdout, again.stderr) == (0, "no changes\n", "")
    # Check defaults are no settings of a push monitor: a new one changes the checked monitor only.
    other_default = apply(cli, tmp_path, FILE, "--dry-run", env={"SITEWATCH_CHECK__MAX_REDIRECTS": "9"})
    assert other_default.stdout.splitlines() == ["~ https://example.com/: max-redirects 5 -> 9"]

    changed = apply(cli, tmp_path, FILE.replace("grace: 30m", "grace: 10m"))
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.splitlines() == ["~ push://nightly: grace 1800 -> 600"]
    assert pushes(db)["push://nightly"][1:] == (600, None, None, True, 86400 + 600)


def test_apply_refuses_to_turn_a_push_monitor_into_a_checked_one_and_prunes_like_any(cli, db, tmp_path):
    assert apply(cli, tmp_path, FILE).returncode == 0
    before = query(db, "SELECT * FROM url ORDER BY id")
    weekly = "- url: push://weekly\n  name: weekly-report\n  cron: '0 6 * * 1'\n  tz: Europe/Berlin\n"
    refused = apply(cli, tmp_path, FILE.replace(weekly, "- url: https://example.net/\n  name: weekly-report\n"))
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "sitewatch: error: weekly-report: a monitor cannot change between push:// and a checked URL (it is "
        "push://weekly): remove it from the file, apply, then add it back"]
    assert query(db, "SELECT * FROM url ORDER BY id") == before
    pruned = apply(cli, tmp_path, "- url: https://example.com/\n", "--prune")
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.splitlines() == ["- push://nightly", "- weekly-report"]
    assert count(db, "url") == 1


# --- listing, and the bare NAME ------------------------------------------------------------------

def test_url_list_shows_a_cron_monitors_schedule_and_zone_and_every_push_monitors_grace(cli, db):
    assert cli("url", "import", "-", input=FILE).returncode == 0
    listed = cli("url", "list")
    assert listed.returncode == 0, listed.stderr
    line = {row.split()[0]: row for row in listed.stdout.splitlines()[1:]}
    assert line["push://weekly"].endswith("[cron '0 6 * * 1' Europe/Berlin, grace 3600 s]")
    assert line["push://nightly"].endswith("[grace 1800 s]")
    assert "grace" not in line["https://example.com/"]
    rows = {row["url"]: row for row in json.loads(cli("url", "list", "--json").stdout)}
    assert {key: rows["push://weekly"][key] for key in ("cron", "tz", "grace")} == \
        {"cron": "0 6 * * 1", "tz": "Europe/Berlin", "grace": 3600}
    assert {key: rows["push://nightly"][key] for key in ("cron", "tz", "grace")} == \
        {"cron": None, "tz": None, "grace": 1800}
    assert {key: rows["https://example.com/"][key] for key in ("cron", "tz", "grace")} == \
        {"cron": None, "tz": None, "grace": None}


def test_url_update_and_status_take_an_unnamed_push_monitors_bare_name(cli, db):
    assert cli("url", "import", "-", input=FILE).returncode == 0
    updated = cli("url", "update", "nightly", "--grace", "5m")
    assert updated.returncode == 0, updated.stderr
    assert updated.stdout.startswith("updated push://nightly: grace")
    assert pushes(db)["push://nightly"][1] == 300
    status = cli("status", "nightly", "--json")
    assert status.returncode == 0, status.stderr
    assert [row["url"] for row in json.loads(status.stdout)] == ["push://nightly"]
    # a monitor's own name comes first; a name that is no monitor's is still refused
    assert cli("url", "add", "https://example.org/", "--name", "nightly").returncode == 0
    assert cli("url", "update", "nightly", "--period", "60").returncode == 0
    assert query(db, "SELECT url, period FROM url WHERE name = 'nightly'") == [("https://example.org/", 60)]
    missing = cli("status", "weekly")                  # push://weekly has a name: weekly-report
    assert missing.returncode == 2 and "no monitor is named 'weekly'" in missing.stderr
