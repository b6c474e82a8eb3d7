"""`sitewatch check URL`: one check, printed, no database; exit 0 when up, 1 when down."""

import json
import subprocess
import sys

import pytest

from tests.conftest import clean_env

# Uses no SITEWATCH_TEST_DSN server: CI runs it in its first (embedded) pass only (.ci/run).
pytestmark = pytest.mark.serverless


def check(tmp_path, *args):
    # A DSN nobody listens on: `check` must not need the database at all.
    env = clean_env(tmp_path, DB_DSN="postgresql://postgres@127.0.0.1:1/none")
    return subprocess.run([sys.executable, "-m", "sitewatch", "check", *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)


def test_an_up_site_exits_0_and_says_up(tmp_path, hostile_server):
    result = check(tmp_path, hostile_server.url("/ok"), "-r", "hello")
    assert result.returncode == 0, result.stderr
    assert "UP" in result.stdout and "200" in result.stdout and "matched" in result.stdout


def test_a_down_site_exits_1_and_names_the_error_kind(tmp_path, hostile_server):
    result = check(tmp_path, hostile_server.url("/status/503"))
    assert result.returncode == 1
    assert "DOWN" in result.stdout and "[status]" in result.stdout


def test_a_regex_miss_is_down(tmp_path, hostile_server):
    result = check(tmp_path, hostile_server.url("/ok"), "-r", "not-in-the-body")
    assert result.returncode == 1
    assert "[regex]" in result.stdout


def test_json_output_has_the_task_result_fields(tmp_path, hostile_server):
    result = check(tmp_path, hostile_server.url("/hang"), "--timeout", "1", "--json")
    assert result.returncode == 1
    outcome = json.loads(result.stdout)
    assert outcome["ok"] is False and outcome["error_kind"] == "timeout"
    assert {"started_at", "response_time_ms", "status_code", "regex_matched", "error"} <= set(outcome)


def test_bad_input_exits_2_with_one_line(tmp_path):
    result = check(tmp_path, "ftp://example.com/")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "scheme" in result.stderr
