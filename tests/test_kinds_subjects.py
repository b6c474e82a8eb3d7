"""A monitor kind's own assertion subjects (issue 20): rcode, answer, len(answer), loss, read
from Response.values, parsed and judged like every other subject."""

import pytest

from sitewatch.assertions import AssertionSyntaxError, evaluate, judge, parse
from sitewatch.check.engine import Response, Timings

pytestmark = pytest.mark.serverless


def response(**values) -> Response:
    return Response(status=None, headers=(), body=None, redirects=0, cert_days_left=None, response_time_ms=12.0,
                    timings=Timings(), error_kind=None, error=None, values=tuple(values.items()))


DNS = response(rcode="NOERROR", answer=("example.com. 300 IN A 192.0.2.1", "example.com. 300 IN A 192.0.2.7"))


@pytest.mark.parametrize("expression, passed, actual", [
    ("rcode == NOERROR", True, '"NOERROR"'),
    ("rcode == noerror", True, '"NOERROR"'),          # a bare response code, any case
    ('rcode == "NXDOMAIN"', False, '"NOERROR"'),
    ("rcode != SERVFAIL", True, '"NOERROR"'),
    ('answer contains "192.0.2.7"', True, None),       # a record holds the text
    ('answer contains "198.51.100.1"', False, None),
    ('answer not contains "198.51.100.1"', True, None),
    ('answer not contains "192.0.2.1"', False, None),
    ('answer == "example.com. 300 IN A 192.0.2.1"', True, None),   # a record is exactly that
    ('answer == "192.0.2.1"', False, None),
    ("answer matches /A 192\\.0\\.2\\.[0-9]+$/", True, None),
    ("answer not matches /AAAA/", True, None),
    ("len(answer) == 2", True, "2"),
    ("len(answer) > 2", False, "2"),
    ("answer exists", True, None),
    ("loss exists", False, "missing"),                   # not a subject this response has
])
def test_dns_subjects(expression, passed, actual):
    verdict = evaluate([parse(expression)], DNS)[0]
    assert verdict.passed is passed, verdict
    if actual is not None:
        assert verdict.actual == actual


def test_an_empty_answer_has_no_records_and_a_length_of_zero():
    nxdomain = response(rcode="NXDOMAIN", answer=())
    verdicts = evaluate([parse('answer contains "x"'), parse("answer not exists"), parse("len(answer) == 0")],
                        nxdomain)
    assert [v.passed for v in verdicts] == [False, True, True]
    assert verdicts[0].actual == "no records"


def test_loss_is_a_percentage():
    ping = response(loss=25.0)
    failed, slow = judge([parse("loss < 50")], [parse("loss == 0")], ping)
    assert failed is None and slow.message == "loss == 0: got 25.0"


def test_the_error_names_the_expression_and_the_records():
    failed, _ = judge([parse('answer contains "198.51.100.1"')], [], DNS)
    assert failed.message.startswith('answer contains "198.51.100.1": got ["example.com. 300 IN A 192.0.2.1"')


@pytest.mark.parametrize("expression, expected", [
    ("answer > 2", "an operator for the records of answer"),
    ("answer in 1-2", "an operator for the records of answer"),
    ("answer == 3", 'a "string"'),
    ("loss < \"x\"", "a number"),
    ("loss contains \"x\"", "a comparison for the number loss"),
    ("rcode == true", 'a "string"'),
    ("len(answer", ") closing len("),
    ("len(rcode) > 1", "json PATH or answer inside len(...)"),
])
def test_refused_with_the_column_and_what_was_expected(expression, expected):
    with pytest.raises(AssertionSyntaxError) as refused:
        parse(expression)
    assert expected in str(refused.value)


def test_each_expression_says_which_subject_a_kind_must_offer():
    assert [parse(text).needs for text in ("len(answer) > 0", "len(json $.a) > 0", "json $.a == 1", "rcode == NOERROR",
                                           "loss < 5", "header x exists")] == \
        ["answer", "json", "json", "rcode", "loss", "header"]
