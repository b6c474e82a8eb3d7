"""`sitewatch apply` while `sitewatch run` checks the same monitors (issue 22: safe with `run`
on any host): the real command against a running supervisor, its producer and consumer, and
the hostile HTTP server on 127.0.0.1."""

from tests.conftest_http import hostile_server as hostile_server  # noqa: F401  (fixture)
from tests.test_alert_state import q
from tests.test_run import server as server  # noqa: F401  (fixture)
from tests.test_run import sitewatch as sitewatch  # noqa: F401  (fixture)
from tests.test_run import wait_until

SHORT = {"MIN_PERIOD": "1"}        # as `run` has it in these tests (test_run.BASE_ENV)


def entries(server, names, period, down=()):  # noqa: F811
    return "".join(f"- url: {server.url('/status/503' if name in down else f'/ok/{name}')}\n"
                   f"  name: {name}\n  period: {period}\n  failure-threshold: 1\n" for name in names)


def results_since(db, name, since) -> int:
    return q(db, "SELECT count(*) FROM task_result r JOIN url u ON u.id = r.url_id"
                 " WHERE u.name = %s AND r.scheduled_at > %s", (name, since))[0][0]


def test_apply_while_run_checks_the_monitors(sitewatch, cli, db, server, tmp_path):  # noqa: F811
    run = sitewatch()
    run.wait_started()
    names = [f"m{i}" for i in range(40)]
    path = tmp_path / "monitors.yaml"
    path.write_text(entries(server, names, 1, down={"m0", "m1"}))
    first = cli("apply", str(path), env=SHORT)
    assert first.returncode == 0 and len(first.stdout.splitlines()) == 40, first.stderr
    wait_until(lambda: q(db, "SELECT count(*) FROM incident WHERE ended_at IS NULL")[0][0] == 2, 20,
               "the two failing monitors down")
    wait_until(lambda: q(db, "SELECT count(DISTINCT url_id) FROM task_result")[0][0] == 40, 20, "every monitor checked")

    # Each apply below runs while slots of these monitors are being enqueued and recorded.
    kept = names[1:30]                 # m0 (down) and m30..m39 pruned; m1 stays down
    for period in (2, 1, 2):
        path.write_text(entries(server, kept, period, down={"m1"}))
        done = cli("apply", str(path), "--prune", env=SHORT)
        assert done.returncode == 0, done.stderr
    assert cli("apply", str(path), "--prune", env=SHORT).stdout.splitlines() == ["no changes"]
    applied_at = q(db, "SELECT now()")[0][0]

    assert q(db, "SELECT count(*) FROM url")[0][0] == 29
    assert q(db, "SELECT end_reason FROM incident i WHERE ended_at IS NOT NULL") == [("url removed",)]
    assert q(db, "SELECT count(*) FROM incident WHERE ended_at IS NULL")[0][0] == 1     # m1, still down
    # The kept monitors go on being checked at their new period, m1's incident stays open.
    wait_until(lambda: all(results_since(db, name, applied_at) >= 2 for name in kept), 20,
               "results for every kept monitor after the applies")
    assert q(db, "SELECT count(*) FROM task WHERE url_id NOT IN (SELECT id FROM url)") == [(0,)]
    assert not [line for line in run.lines() if line.get("level") in ("error", "critical")]
    assert run.proc.poll() is None
