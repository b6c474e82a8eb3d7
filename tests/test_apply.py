"""`sitewatch apply` with the real command against a real PostgreSQL (DESIGN.md section 12,
issue 22): the plan, idempotence, --dry-run, --prune, bad input, changes in place, removals
as `url remove` does them, secrets, stdin."""

import dataclasses
import json
import subprocess
import sys
import time

import psycopg2
import pytest

from sitewatch import apply
from sitewatch.db import store
from sitewatch.urlspec import UrlEntry
from tests.conftest import clean_env, count
from tests.test_alert_state import feed, outbox, q

SECRET = "tok-8d1e55c0"
CHANNELS = {"SITEWATCH_ALERTS__CHANNELS": json.dumps({"ops": "json://127.0.0.1:9/x", "mail": "json://127.0.0.1:9/y"})}

FIRST = """\
- https://plain.example/
- url: https://api.example/health
  name: api
  period: 30
  regex: ok
- url: https://old.example/
  name: old
"""


def ok(result):
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stdout


def lines(result):
    return ok(result).splitlines()


def apply_text(cli, tmp_path, text, *flags, env=None):
    path = tmp_path / "monitors.yaml"
    path.write_text(text)
    return cli("apply", str(path), *flags, env=env)


def snapshot(db):
    """Every table apply could touch, as it stands."""
    tables = {}
    with db.cursor() as cur:
        for table in ("url", "url_state", "incident", "alert_outbox", "task", "task_result"):
            cur.execute(f"SELECT * FROM {table} ORDER BY 1")
            tables[table] = cur.fetchall()
    return tables


def monitor(db, name):
    rows = q(db, "SELECT id, period, regex, timeout, extract(epoch FROM next_check_at - now())"
                 " FROM url WHERE coalesce(name, url) = %s", (name,))
    return dict(zip(["id", "period", "regex", "timeout", "due_in"], rows[0], strict=True)) if rows else None


# --- the plan -------------------------------------------------------------------------------------

def test_plan_lines_for_add_change_and_remove_then_no_changes(cli, db, tmp_path):
    assert lines(apply_text(cli, tmp_path, FIRST)) == ["+ https://plain.example/", "+ api", "+ old"]
    assert count(db, "url") == 3
    assert lines(apply_text(cli, tmp_path, FIRST)) == ["no changes"]
    q(db, "UPDATE url SET headers = '{}' WHERE name = 'old'")     # no headers, as a hand-written row says it
    assert lines(apply_text(cli, tmp_path, FIRST)) == ["no changes"]

    # regex: left out is a change to its default (none); period changed; `old` not named.
    second = """\
- https://plain.example/
- url: https://api.example/health
  name: api
  period: 45
- url: https://new.example/
  name: new
"""
    assert lines(apply_text(cli, tmp_path, second, "--prune")) == [
        "~ api: period 30 -> 45", '~ api: regex "ok" -> none', "+ new", "- old"]
    assert monitor(db, "api")["period"] == 45 and monitor(db, "api")["regex"] is None
    assert monitor(db, "old") is None and monitor(db, "new") is not None
    assert lines(apply_text(cli, tmp_path, second, "--prune")) == ["no changes"]


def test_without_prune_nothing_is_removed(cli, db, tmp_path):
    ok(apply_text(cli, tmp_path, FIRST))
    assert lines(apply_text(cli, tmp_path, "- url: https://other.example/\n  name: other\n")) == ["+ other"]
    assert count(db, "url") == 4
    assert lines(apply_text(cli, tmp_path, "- url: https://other.example/\n  name: other\n", "--prune")) == [
        "- api", "- https://plain.example/", "- old"]
    assert [name for (name,) in q(db, "SELECT name FROM url")] == ["other"]


def test_dry_run_prints_the_plan_and_writes_nothing(cli, db, tmp_path):
    ok(apply_text(cli, tmp_path, FIRST))
    before = snapshot(db)
    result = apply_text(cli, tmp_path, "- url: https://api.example/health\n  name: api\n  period: 90\n"
                                       "- https://added.example/\n", "--prune", "--dry-run")
    assert lines(result) == ["~ api: period 30 -> 90", '~ api: regex "ok" -> none', "+ https://added.example/",
                             "- https://plain.example/", "- old"]
    assert "dry run" in result.stderr
    assert snapshot(db) == before


def test_every_field_of_a_monitor_is_compared():
    """The plan is derived from UrlEntry: a field added to monitors is applied without a
    hand-written list to forget it in."""
    base = UrlEntry(url="https://a.example/", period=60, regex=None, timeout=10.0, method="GET",
                    expected_status="200-399", max_redirects=5, verify_tls=True, name="a")
    other_values = {"url": "https://b.example/", "period": 61, "regex": "x", "timeout": 9.0, "method": "HEAD",
                    "expected_status": "200", "max_redirects": 0, "verify_tls": False, "failure_threshold": 1,
                    "success_threshold": 1, "notify": ["ops"], "assertions": ["status == 200"],
                    "degraded": ["status == 200"], "headers": ["X-A: 1"], "body": b"x", "body_json": True,
                    "bearer": "b", "client_cert": "/c", "client_key": "/k", "ip_version": 6, "grace": 300,
                    "cron": "0 3 * * *", "tz": "Europe/Berlin", "regions": ["eu", "us"], "down_when": "all"}
    columns = store.ENTRY_COLUMNS
    stored = [(7, *(getattr(base, column) for column in columns))]
    for f in dataclasses.fields(UrlEntry):
        if f.name == "name":
            continue       # the identity: another name is another monitor
        assert f.name in other_values, f"no test value for the new field {f.name}: add one"
        changed = dataclasses.replace(base, **{f.name: other_values[f.name]})
        plan = apply.make_plan([changed], columns, stored, prune=False)
        assert plan.changed == [(7, changed)], f.name
        assert len(plan.lines) == 1 and plan.lines[0].startswith("~ a: "), (f.name, plan.lines)
    assert apply.make_plan([base], columns, stored, prune=False).lines == []


# --- bad input --------------------------------------------------------------------------------------

def test_a_bad_entry_exits_2_naming_it_and_its_line_and_writes_nothing(cli, db, tmp_path):
    ok(apply_text(cli, tmp_path, FIRST))
    before = snapshot(db)
    bad = FIRST.replace("name: old\n", "name: old\n- url: https://x.example/\n  period: often\n")
    result = apply_text(cli, tmp_path, bad, "--prune")
    assert result.returncode == 2, (result.stdout, result.stderr)
    error = result.stderr.strip().splitlines()
    assert len(error) == 1 and "entry 4 (line 8)" in error[0] and "period" in error[0], error
    assert result.stdout == ""
    assert snapshot(db) == before


def test_a_file_naming_one_monitor_twice_is_refused(cli, db, tmp_path):
    result = apply_text(cli, tmp_path, "- url: https://a.example/\n  name: a\n- url: https://b.example/\n  name: a\n")
    assert result.returncode == 2 and "entry 2 (line 3)" in result.stderr and "already listed" in result.stderr
    assert count(db, "url") == 0


# --- changes in place, removals ---------------------------------------------------------------------

def test_a_new_period_re_slots_from_now_like_url_update(cli, db, tmp_path):
    ok(apply_text(cli, tmp_path, FIRST))
    q(db, "UPDATE url SET next_check_at = now() + interval '1 hour'")
    ok(apply_text(cli, tmp_path, FIRST.replace("period: 30", "period: 40").replace("name: old\n",
                                                                                   "name: old\n  timeout: 3\n")))
    assert abs(monitor(db, "api")["due_in"]) < 5                  # re-slotted from now
    assert 3500 < monitor(db, "old")["due_in"] <= 3600             # changed, same period: phase kept
    assert 3500 < monitor(db, "https://plain.example/")["due_in"] <= 3600   # unchanged


def test_a_change_keeps_history_state_and_incidents(cli, db, tmp_path):
    ok(apply_text(cli, tmp_path, FIRST.replace("name: api\n", "name: api\n  failure-threshold: 1\n")))
    api = monitor(db, "api")["id"]
    feed(db, api, [True, False])
    before = q(db, "SELECT url_id, state, fail_streak, incident_id FROM url_state WHERE url_id = %s", (api,))
    assert before[0][1] == "down"
    results = q(db, "SELECT count(*) FROM task_result WHERE url_id = %s", (api,))[0][0]
    assert lines(apply_text(cli, tmp_path, FIRST.replace("regex: ok", "regex: fine"))) == [
        "~ api: regex \"ok\" -> \"fine\"", "~ api: failure-threshold 1 -> none"]
    assert monitor(db, "api")["id"] == api
    assert q(db, "SELECT count(*) FROM task_result WHERE url_id = %s", (api,))[0][0] == results == 2
    assert q(db, "SELECT url_id, state, fail_streak, incident_id FROM url_state WHERE url_id = %s", (api,)) == before
    assert q(db, "SELECT count(*) FROM incident WHERE url_id = %s AND ended_at IS NULL", (api,)) == [(1,)]


def test_prune_closes_an_open_incident_and_sends_removed_like_url_remove(cli, db, tmp_path):
    ok(apply_text(cli, tmp_path, FIRST.replace("name: old\n", "name: old\n  failure-threshold: 1\n"), env=CHANNELS))
    old = monitor(db, "old")["id"]
    feed(db, old, [False])
    (incident_id,) = q(db, "SELECT id FROM incident WHERE url_id = %s", (old,))[0]
    assert [kind for kind, *_ in outbox(db)] == ["down", "down"]
    assert lines(apply_text(cli, tmp_path, FIRST.split("- url: https://old")[0], "--prune", env=CHANNELS)) == [
        "- old"]
    assert q(db, "SELECT end_reason, ended_at IS NOT NULL FROM incident") == [("url removed", True)]
    assert outbox(db)[2:] == [("removed", "mail", f"incident:{incident_id}:removed"),
                              ("removed", "ops", f"incident:{incident_id}:removed")]
    assert q(db, "SELECT count(*) FROM task_result WHERE url_id = %s", (old,)) == [(1,)]   # history stays


# --- secrets, stdin, size ---------------------------------------------------------------------------

def test_secrets_are_redacted_in_the_plan(cli, tmp_path):
    first = f"""\
- url: https://user:{SECRET}p@api.example/health?key={SECRET}q
  name: api
  bearer: {SECRET}b
  headers:
    Cookie: sid={SECRET}c
    X-Key: ${{API_KEY}}
    X-Tenant: acme
  body: 'token={SECRET}d'
"""
    second = first.replace(SECRET, "tok-0ther")
    second = second.replace("body: 'token=tok-0therd'", "body: 'token=${TOKEN}'")
    out = ok(apply_text(cli, tmp_path, first)) + ok(apply_text(cli, tmp_path, second))
    plan = out.splitlines()[1:]
    assert plan == [
        '~ api: url "https://***@api.example/health?***" -> "https://***@api.example/health?***"',
        "~ api: headers [\"Cookie: ***\", \"X-Key: ***\", \"X-Tenant: acme\"] -> "
        "[\"Cookie: ***\", \"X-Key: ***\", \"X-Tenant: acme\"]",
        f'~ api: body "token={SECRET}d" -> ***',       # a literal body is shown as it would be by url list
        "~ api: bearer *** -> ***"]
    for secret in ("tok-0ther", "${", f"{SECRET}p", f"{SECRET}q", f"{SECRET}b", f"{SECRET}c"):
        assert secret not in out


def test_stdin(cli, db):
    result = cli("apply", "-", input=FIRST)
    assert lines(result) == ["+ https://plain.example/", "+ api", "+ old"]
    assert lines(cli("apply", "-", "--prune", input="- https://plain.example/\n")) == ["- api", "- old"]
    bad = cli("apply", "-", input="- url: ftp://x.example/\n")
    assert bad.returncode == 2 and "<stdin>: entry 1 (line 1)" in bad.stderr
    assert count(db, "url") == 1


@pytest.mark.parametrize("n", [10_000])
def test_ten_thousand_entries(cli, db, tmp_path, n):
    text = "".join(f"- url: https://site{i}.example/\n  name: site-{i}\n  period: 60\n" for i in range(n))
    assert len(lines(apply_text(cli, tmp_path, text))) == n
    assert count(db, "url") == n == count(db, "url_state")
    assert lines(apply_text(cli, tmp_path, text)) == ["no changes"]
    changed = text.replace("site-7\n  period: 60", "site-7\n  period: 61")
    assert lines(apply_text(cli, tmp_path, changed + "- https://extra.example/\n", "--prune")) == [
        "~ site-7: period 60 -> 61", "+ https://extra.example/"]
    # The first slots are spread across the period, as import spreads them.
    spread = q(db, "SELECT max(next_check_at) - min(next_check_at) FROM url WHERE period = 60")[0][0]
    assert spread.total_seconds() > 50


def test_a_failed_write_leaves_everything_as_it_was(cli, db, tmp_path):
    """All or nothing: the removals and changes written before a failing addition are rolled
    back with it (the failure: a trigger refusing one URL, standing in for any database error)."""
    ok(apply_text(cli, tmp_path, FIRST))
    q(db, "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
          " IF NEW.url = 'https://refused.example/' THEN RAISE EXCEPTION 'refused by the test'; END IF;"
          " RETURN NEW; END $$")
    q(db, "CREATE TRIGGER refuse BEFORE INSERT ON url FOR EACH ROW EXECUTE FUNCTION refuse()")
    before = snapshot(db)
    result = apply_text(cli, tmp_path, FIRST.replace("period: 30", "period: 50").split("- url: https://old")[0]
                        + "- https://refused.example/\n", "--prune")
    assert result.returncode == 1 and "refused by the test" in result.stderr, result.stderr
    assert result.stdout == ""
    assert snapshot(db) == before


def test_a_monitor_added_meanwhile_by_another_command_is_planned_again(cli, db, dsn, tmp_path):
    """`url add` does not take apply's lock: when it adds a monitor the plan adds, the insert
    waits on it, fails on its commit, and apply reads and plans again (no error, no duplicate)."""
    path = tmp_path / "monitors.yaml"
    path.write_text(FIRST)
    other = psycopg2.connect(dsn)          # a transaction: `url add` of `api`, not committed yet
    try:
        with other.cursor() as cur:
            cur.execute("INSERT INTO url (url, name, period, timeout, next_check_at)"
                        " VALUES ('https://api.example/health', 'api', 99, 10, now())")
        proc = subprocess.Popen([sys.executable, "-m", "sitewatch", "apply", str(path)], cwd=tmp_path,
                                env=clean_env(tmp_path, DB_DSN=dsn), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not q(db, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock'")[0][0]:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        other.commit()
        out, err = proc.communicate(timeout=60)
    finally:
        other.close()
    assert proc.returncode == 0, err
    assert out.splitlines() == ["+ https://plain.example/", "~ api: period 99 -> 30", '~ api: regex none -> "ok"',
                                "+ old"]
    assert q(db, "SELECT count(*), min(period) FROM url WHERE name = 'api'") == [(1, 30)]


def test_the_readme_ci_job_runs_apply_in_its_environment(cli, tmp_path):
    """README's GitHub Actions job: its `env` (DB_DSN pointed at the test's database) must be an
    environment `sitewatch apply` accepts; a SITEWATCH_* name that is no setting is refused
    (exit 2), as the job once had. Its two commands then plan and apply a file."""
    import os
    import re

    import yaml
    readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md"),
                  encoding="utf-8").read()
    block = re.search(r"A CI job \(GitHub Actions\).*?```yaml\n(.*?)```", readme, re.S).group(1)
    job = yaml.safe_load(block)["jobs"]["monitors"]
    env = {k: "placeholder" for k in job["env"] if k != "DB_DSN"}
    (tmp_path / "monitors.yaml").write_text("- url: https://ci.example/\n")
    commands = [step["run"] for step in job["steps"] if "sitewatch apply" in step.get("run", "")]
    assert commands == ["sitewatch apply monitors.yaml --prune --dry-run", "sitewatch apply monitors.yaml --prune"]
    planned = cli(*commands[0].split()[1:], env=env)
    assert planned.returncode == 0, planned.stderr
    assert planned.stdout == "+ https://ci.example/\n"
    applied = cli(*commands[1].split()[1:], env=env)
    assert applied.returncode == 0 and applied.stdout == "+ https://ci.example/\n", applied.stderr
