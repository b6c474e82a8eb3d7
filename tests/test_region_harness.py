"""tests/regionharness.py for real (issue 21): a `sitewatch run` whose check.source_address the
target refuses records failed results; one from an address it answers records ok results.

One module, one database, two runs one after the other (no `region` yet: only the source
address differs between them).
"""

from tests.regionharness import RESET_ERROR, SourceFilteringServer, import_urls, start_run, wait_until

RESULTS = 3          # results per run: enough to see that it is every check, not a fluke
WAIT = 30.0


def results(db, after=None) -> list[tuple]:
    """(scheduled_at, ok, error_kind, error) of every result, by slot; after a slot when given."""
    with db.cursor() as cur:
        cur.execute("SELECT scheduled_at, ok, error_kind, error FROM task_result"
                    " WHERE %(after)s::timestamptz IS NULL OR scheduled_at > %(after)s ORDER BY scheduled_at",
                    {"after": after})
        return cur.fetchall()


def test_a_run_from_a_refused_source_address_records_failures_and_from_another_one_ok(dsn, db, tmp_path):
    with SourceFilteringServer(refuse={"127.0.0.3"}) as server:
        import_urls(tmp_path, dsn, [{"url": server.url("/"), "period": 1}])

        refused_run = start_run(tmp_path, dsn, name="from-3", source_address="127.0.0.3")
        try:
            wait_until(lambda: len(results(db)) >= RESULTS, WAIT, f"{RESULTS} results from 127.0.0.3")
        finally:
            assert refused_run.stop() == 0, refused_run.text()[-2000:]
        first = results(db)
        answered, refused = server.counts()
        assert first and not any(ok for _, ok, _, _ in first), first
        assert {kind for _, _, kind, _ in first} <= {"connect", "protocol"}, first
        assert all(RESET_ERROR.search(error) for _, _, _, error in first), first     # the server's RST
        assert answered == {} and set(refused) == {"127.0.0.3"} and refused["127.0.0.3"] >= len(first)

        cut = first[-1][0]
        # The notifier's connectivity check vouches for the checks' network: from their address too.
        answered_run = start_run(tmp_path, dsn, name="from-2", source_address="127.0.0.2",
                                 env={"SITEWATCH_ALERTS__CONNECTIVITY_URL": server.url("/net")})
        try:
            wait_until(lambda: len(results(db, cut)) >= RESULTS, WAIT, f"{RESULTS} results from 127.0.0.2")
            wait_until(lambda: server.paths[("127.0.0.2", "/net")], WAIT, "a connectivity check")
        finally:
            assert answered_run.stop() == 0, answered_run.text()[-2000:]
        second = results(db, cut)
        answered, refused = server.counts()
    assert all(ok for _, ok, _, _ in second), second
    # Every request answered came from 127.0.0.2: the checks' and the connectivity check's.
    assert set(answered) == {"127.0.0.2"} and answered["127.0.0.2"] >= len(second)
    assert set(refused) == {"127.0.0.3"}     # nothing from 127.0.0.2 was refused
