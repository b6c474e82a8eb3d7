"""`sitewatch check URL`: one check now, as a consumer on this host would make it, printed
(or as JSON) with each assertion's verdict; nothing is written."""

import datetime
import json


def run(args, cfg, options: dict) -> int:
    """Check one URL now with `options` (the check and request options given), print the
    outcome; exit 0 when it is ok, 1 when not."""
    from .check import definition, kinds, probe
    from .check.choice import engine_named
    from .urlspec import make_entry
    options = {**options, "period": cfg.check.default_period}
    entry = make_entry(options, cfg.check)
    http = kinds.is_http(entry.url)
    engine = _Recording(engine_named(cfg.check.engine) if http else _Kind(entry.url))
    try:
        target = definition.target_for(entry.as_row(), cfg.check.max_body_bytes, cfg.check.source_address or None)
        if http:
            outcome = probe.check(target, engine)
        else:   # a kind's fetch never raises (check/kinds.py); judged like any response
            started_at = datetime.datetime.now(datetime.timezone.utc)
            outcome = probe.judge(target, engine.fetch(target.request), started_at)
    except definition.MissingVariable as missing:     # as a consumer on this host would see it
        target = probe.target_for(entry.as_row(), cfg.check.max_body_bytes, cfg.check.source_address or None)
        outcome = definition.missing_outcome(missing)
    if args.output_json or args.json_body is True:
        print(json.dumps({**probe.outcome_to_dict(outcome), "engine": engine.name}))
    else:
        print(probe.format_outcome(target, outcome, engine.name if http else None))
        print_values(engine.response)
        print_assertions(target, engine.response)
    return 0 if outcome.ok else 1


class _Recording:
    """An engine that keeps the response it fetched, so `check` can show each assertion on it."""

    def __init__(self, engine) -> None:
        self.engine, self.name, self.response = engine, engine.name, None

    def fetch(self, request):
        self.response = self.engine.fetch(request)
        return self.response


class _Kind:
    """A monitor kind (tcp://, tls://...) in the place of an engine."""

    def __init__(self, url: str) -> None:
        from .check import kinds
        self.name = kinds.scheme_of(url)
        self.fetch = kinds.fetch


def print_values(response) -> None:
    """A kind's own subjects (a DNS check's rcode and answer, a ping's loss), one line each."""
    for name, value in getattr(response, "values", None) or ():
        shown = ", ".join(map(str, value)) if isinstance(value, (tuple, list)) else value
        print(f"{name + ':':9} {shown if shown != '' else '-'}")


def print_assertions(target, response) -> None:
    """Each `assert` and `degraded` expression with pass or FAIL and the actual value."""
    if (target.assertions or target.degraded) and response is not None and response.error_kind is None:
        from .assertions import explain
        print("Assertions:")
        for line in explain(target.assertions, target.degraded, response):
            print(f"  {line}")
