"""dns:// and icmp:// plugged into the kinds registry (check/kinds.py): a definition is validated
by url add's rules, checked through probe.check and judged by probe.judge, the dns kind's
default verdict included, and `sitewatch check` prints the kind's own values."""

import subprocess
import sys

import pytest

from sitewatch import config
from sitewatch.check import definition, probe
from sitewatch.errors import BadInput
from sitewatch.urlspec import make_entry
from tests.conftest import clean_env, count
from tests.test_kind_dns import dns_server as dns_server  # noqa: F401  (fixture)
from tests.test_run import sitewatch as sitewatch  # noqa: F401  (fixture)

CFG = config.load({}, {}, None)


def check(url, **options):
    entry = make_entry({"url": url, "timeout": 3, **options}, CFG.check)
    return probe.check(definition.target_for(entry.as_row(), CFG.check.max_body_bytes))


@pytest.mark.serverless
def test_a_dns_answer_passes_the_default_and_the_assertions(dns_server):  # noqa: F811
    outcome = check(f"dns://127.0.0.1:{dns_server}/ok.test",
                    **{"assert": ['answer contains "192.0.2.2"', "len(answer) == 2", "rcode == NOERROR"]})
    assert outcome.ok and outcome.error is None, outcome
    outcome = check(f"dns://127.0.0.1:{dns_server}/ok.test", **{"assert": ['answer contains "198.51.100.1"']})
    assert outcome.error_kind == "assertion", outcome
    assert outcome.error.startswith('answer contains "198.51.100.1": got ["192.0.2.1","192.0.2.2"]')


def test_nxdomain_fails_by_default_unless_rcode_is_asserted(dns_server):  # noqa: F811
    outcome = check(f"dns://127.0.0.1:{dns_server}/missing.test")
    assert (outcome.ok, outcome.error_kind, outcome.error) == (False, "dns", "NXDOMAIN for missing.test A")
    outcome = check(f"dns://127.0.0.1:{dns_server}/missing.test", **{"assert": ["rcode == NXDOMAIN"]})
    assert outcome.ok, outcome


def test_an_empty_answer_passes_when_its_length_is_asserted(dns_server):  # noqa: F811
    url = f"dns://127.0.0.1:{dns_server}/ok.test?type=MX"
    assert check(url).error_kind == "dns"
    assert check(url, **{"assert": ["len(answer) == 0"]}).ok


@pytest.mark.parametrize("options, words", [
    ({"url": "dns://127.0.0.1/ok.test", "assert": ["loss < 5"]}, "'loss < 5' does not apply to a dns:// monitor"),
    ({"url": "icmp://127.0.0.1", "assert": ["rcode == NOERROR"]}, "does not apply to an icmp:// monitor"),
    ({"url": "icmp://127.0.0.1", "send": "x"}, "send does not apply to an icmp:// monitor"),
    ({"url": "dns://127.0.0.1/ok.test", "headers": ["X-A: b"]}, "headers does not apply to a dns:// monitor"),
])
def test_what_a_plugged_kind_does_not_take_is_refused(options, words):
    with pytest.raises(BadInput) as refused:
        make_entry(options, CFG.check)
    assert words in str(refused.value)


def test_sitewatch_check_prints_the_kinds_values(tmp_path, dns_server):  # noqa: F811
    env = clean_env(tmp_path, DB_DSN="postgresql://nobody@127.0.0.1:1/none")
    done = subprocess.run([sys.executable, "-m", "sitewatch", "check", f"dns://127.0.0.1:{dns_server}/ok.test",
                           "--assert", 'answer contains "192.0.2.1"'],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Verdict:  UP" in done.stdout and "Status:" not in done.stdout
    assert "rcode:    NOERROR" in done.stdout and "answer:   192.0.2.1, 192.0.2.2" in done.stdout
    assert 'pass  answer contains "192.0.2.1"' in done.stdout


@pytest.fixture
def icmp_forbidden():
    from sitewatch.check import icmp
    reason = icmp.available()
    if reason is None:
        pytest.skip("this host allows unprivileged ICMP sockets")
    return reason


def test_url_add_warns_when_this_host_cannot_ping(cli, db, icmp_forbidden):
    done = cli("url", "add", "icmp://127.0.0.1")
    assert done.returncode == 0, done.stderr
    assert "warning: icmp://127.0.0.1: unprivileged ICMP sockets are not allowed" in done.stderr
    assert "ping_group_range" in done.stderr
    assert count(db, "url") == 1


def test_sitewatch_run_says_why_it_cannot_ping_and_records_nothing(sitewatch, cli, db, icmp_forbidden):  # noqa: F811
    assert cli("url", "add", "icmp://127.0.0.1", "-p", "1", env={"MIN_PERIOD": "1"}).returncode == 0
    run = sitewatch()
    failure = run.wait_for("monitor failure: this host cannot check the URL; its slot is handed back unchecked")[0]
    assert "ping_group_range" in failure["error"], failure
    assert count(db, "task_result") == 0
    # Handed back before it runs, and no reason to hold fewer checks of every other kind (the
    # path for running out of descriptors backs the limit off).
    assert not run.events("monitor failure: checks could not run (out of file descriptors or threads?); "
                          "tasks handed back, not recorded as site failures")
