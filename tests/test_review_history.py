"""Issue 24, D21: a removed URL's results stay until retention, and `history` exports them: by
the URL's id, or by its text when an incident recorded it."""

import json


def _add_and_remove(cli, db, url: str) -> int:
    assert cli("url", "add", url).returncode == 0
    with db.cursor() as cur:
        cur.execute("SELECT id FROM url WHERE url = %s", (url,))
        (url_id,) = cur.fetchone()
        cur.execute("""INSERT INTO task_result (url_id, scheduled_at, started_at, ok, status_code, error_kind, error,
                                                checked_by)
                       SELECT %s, t, t, n <> 2, CASE WHEN n = 2 THEN 503 ELSE 200 END,
                              CASE WHEN n = 2 THEN 'status' END, CASE WHEN n = 2 THEN 'status 503' END, 'test'
                       FROM generate_series(1, 3) n,
                            LATERAL (SELECT date_trunc('minute', now()) - n * interval '1 minute' AS t) s""",
                    (url_id,))
        cur.execute("INSERT INTO incident (url_id, url, started_at, ended_at, failed_checks)"
                    " SELECT %s, alert_redact_url(%s), now() - interval '2 minutes', now() - interval '1 minute', 1",
                    (url_id, url))
    assert cli("url", "remove", url).returncode == 0
    return url_id


def _rows(out) -> list[dict]:
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_a_removed_url_is_exported_by_its_url_or_its_id(cli, db):
    url_id = _add_and_remove(cli, db, "https://gone.example/health")
    by_url = _rows(cli("history", "https://gone.example/health", "--since", "1h", "--format", "json"))
    assert [(r["ok"], r["status_code"]) for r in by_url] == [(True, 200), (False, 503), (True, 200)]
    by_id = _rows(cli("history", str(url_id), "--since", "1h", "--format", "json"))
    assert by_id == by_url


def test_a_removed_url_with_a_secret_is_found_through_its_redacted_text(cli, db):
    url_id = _add_and_remove(cli, db, "https://bob:pw@secret.example/status?token=abc")
    rows = _rows(cli("history", "https://bob:pw@secret.example/status?token=abc", "--since", "1h",
                     "--format", "json"))
    assert len(rows) == 3
    assert _rows(cli("history", str(url_id), "--since", "1h", "--format", "json")) == rows


def test_two_removed_urls_with_one_redacted_text_need_the_id(cli, db):
    first = _add_and_remove(cli, db, "https://secret.example/?token=one")
    second = _add_and_remove(cli, db, "https://secret.example/?token=two")
    out = cli("history", "https://secret.example/?token=one")
    assert out.returncode == 2
    assert f"ids {second}, {first}" in out.stderr and "token=one" not in out.stderr


def test_unknown_urls_and_ids_still_exit_2(cli, db):
    out = cli("history", "https://never.example/")
    assert out.returncode == 2 and "not monitored" in out.stderr
    out = cli("history", "987654")
    assert out.returncode == 2 and "no URL with id 987654" in out.stderr
