"""Configuration: defaults < YAML file < environment < command-line flags.

Pure: the environment and the flags are passed in as arguments (only the CLI
reads os.environ and sys.argv). Every value remembers where it came from, so
errors and `sitewatch config show` can say so.
"""

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import yaml

from . import settingchecks as accepts
from .errors import ConfigError
from .manage.importfile import YamlLoader
from .redact import redact_dsn

ENV_PREFIX = "SITEWATCH_"

# The seed's variable names keep working (original-readme.md).
ENV_ALIASES = {
    "DB_DSN": ("database", "dsn"),
    "DB_TIMEOUT": ("database", "timeout"),
    "MIN_PERIOD": ("check", "min_period"),
    "MAX_PERIOD": ("check", "max_period"),
    "HTTP_REQUEST_TIMEOUT": ("check", "timeout"),
    "SENTRY_DSN": ("sentry", "dsn"),     # the Sentry SDK's own variable
}


def default_data_dir(env: Mapping[str, str]) -> str:
    """Where the embedded PostgreSQL lives when no DSN is configured (XDG data dir)."""
    home = env.get("HOME") or os.path.expanduser("~")
    base = env.get("XDG_DATA_HOME") or os.path.join(home, ".local", "share")
    return os.path.join(base, "sitewatch", "postgres")


@dataclass(frozen=True)
class Setting:
    section: str
    key: str
    kind: type            # int, float, str, bool
    default: Any
    help: str
    optional: bool = False            # None allowed (and is the default meaning "unset")
    check: Callable[[Any], str | None] | None = None  # returns a complaint, or None when fine
    secret: bool = False
    numbers_as_text: bool = False     # a str setting that also takes a YAML number (a duration: 0, 90)
    redact: Callable[[str], str] = redact_dsn   # how a secret value is shown (config show, errors)

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}" if self.section else self.key    # top-level: `region`

    @property
    def env_var(self) -> str:
        if not self.section:
            return f"{ENV_PREFIX}{self.key.upper()}"
        return f"{ENV_PREFIX}{self.section.upper()}__{self.key.upper()}"


SETTINGS = [
    # Top-level (no section): the YAML key `region`, env SITEWATCH_REGION.
    Setting("", "region", str, "", "This host's region (DESIGN.md section 12): its consumers check the "
            "tasks of URLs listed in this region, and those of URLs without regions. Empty: no region "
            "(only URLs without regions).", check=accepts.region),
    Setting("database", "dsn", str, None, "PostgreSQL DSN (URI or key=value). Unset: run an embedded "
            "PostgreSQL in database.data_dir.", optional=True, secret=True),
    Setting("database", "data_dir", str, None, "Data directory of the embedded PostgreSQL. Unset: "
            "$XDG_DATA_HOME/sitewatch/postgres (~/.local/share/sitewatch/postgres).", optional=True),
    Setting("database", "timeout", float, 5.0, "Seconds allowed to connect and for each statement.",
            check=accepts.positive),

    Setting("check", "timeout", float, 10.0, "Default total deadline of one check in seconds "
            "(DNS, connect, TLS, headers and body, all redirects; a tcp:// monitor's connect, send and "
            "read; a tls:// monitor's handshake).", check=accepts.at_most(3600)),
    Setting("check", "default_period", int, 60, "Period in seconds of URLs added without -p.",
            check=accepts.positive),
    Setting("check", "min_period", int, 5, "Smallest period a URL may have, in seconds.", check=accepts.positive),
    Setting("check", "max_period", int, 300, "Largest period a URL may have, in seconds.", check=accepts.positive),
    Setting("check", "max_redirects", int, 5, "Default number of redirects followed (at most 30).",
            check=lambda v: None if 0 <= v <= 30 else "must be from 0 to 30"),
    Setting("check", "max_body_bytes", int, 1_048_576, "Bytes of body read at most (after decompression); "
            "more is the error body_too_large.", check=accepts.positive),
    Setting("check", "expected_status", str, "200-399", "Default expected status codes: codes and ranges, "
            "e.g. 200-299,301.", check=accepts.status_codes),
    Setting("check", "verify_tls", bool, True, "Default for verifying TLS certificates (https:// and tls:// "
            "monitors)."),
    # auto (curl where pycurl is installed): the same day's 100,000-URL soaks (docs/benchmarks.md,
    # ninth session) checked every slot on curl with 2 threads, where urllib3 fell behind from
    # minute 2 with 5,000.
    Setting("check", "regions", list, [], "Default regions of URLs added without --regions: each slot is "
            "checked once in each, by a host of that region. Empty: by any one host.", check=accepts.regions),
    Setting("check", "engine", str, "auto", "HTTP engine of the checks: urllib3, curl (libcurl, via "
            "pycurl), or auto (curl when pycurl imports, else urllib3).", check=accepts.engine),
    Setting("check", "source_address", str, "", "Local IP address every check binds to (HTTP, tcp://, "
            "tls://, dns://, icmp://): on a multi-homed host, the network the checks leave by. Only targets "
            "of its IP version are reached. Empty: the system chooses.", check=accepts.source_address),

    Setting("producer", "poll_interval", float, 0.2, "Seconds between looks for due URLs.", check=accepts.positive),
    Setting("producer", "batch_size", int, 2000, "URLs enqueued per statement at most.", check=accepts.positive),

    Setting("consumer", "processes", int, None, "Consumer processes per `sitewatch run`. Unset: the number "
            "of CPUs.", optional=True, check=accepts.positive),
    Setting("consumer", "concurrency", int, 2500, "Most checks in flight per consumer process (a ceiling: "
            "the thread pool grows toward it while tasks wait and the CPU has room, and shrinks when idle).",
            check=accepts.positive),
    Setting("consumer", "pin_cpu", bool, True, "Keep each consumer process on one CPU (consumer N on the "
            "N-th usable CPU, round robin; Linux): moving the GIL between cores halves throughput."),
    Setting("consumer", "poll_interval", float, 1.0, "Seconds between claims when no NOTIFY arrives.",
            check=accepts.positive),
    Setting("consumer", "lease_margin", float, 10.0, "Seconds a lease outlives the check's timeout before "
            "another consumer may take the task.", check=accepts.positive),
    Setting("consumer", "max_attempts", int, 3, "Attempts at one slot before it is recorded as lost.",
            check=accepts.positive),
    Setting("consumer", "write_batch", int, 500, "Results written per statement at most.", check=accepts.positive),
    Setting("consumer", "flush_interval", float, 0.1, "Seconds a result may wait before it is written.",
            check=accepts.positive),
    Setting("consumer", "stuck_margin", float, 30.0, "Seconds past its deadline after which a running check "
            "counts as stuck; a consumer whose every check is stuck stops its heartbeat and is replaced.",
            check=accepts.positive),

    Setting("supervisor", "grace_period", float, 15.0, "Seconds in-flight checks get to finish on "
            "SIGTERM/SIGINT before children are killed.", check=accepts.positive),
    Setting("supervisor", "heartbeat_timeout", float, 30.0, "Seconds of silence after which a child is "
            "killed and restarted.", check=accepts.positive),
    Setting("supervisor", "restart_backoff_max", float, 30.0, "Longest wait in seconds before restarting "
            "a child that keeps dying.", check=accepts.positive),
    Setting("supervisor", "stable_after", float, 60.0, "Seconds a child must have run for its death to "
            "start the restart backoff again from 0.5 s.", check=accepts.positive),
    Setting("supervisor", "summary_interval", float, 60.0, "Seconds between summary log lines.",
            check=accepts.positive),

    Setting("alerts", "failure_threshold", int, 3, "Consecutive failed slots that turn a URL down (a URL "
            "may override it: url add --failure-threshold).", check=accepts.between(1, 1000)),
    Setting("alerts", "success_threshold", int, 2, "Consecutive good slots that turn a down URL up "
            "again (url add --success-threshold).", check=accepts.between(1, 1000)),
    Setting("alerts", "notify_degraded", bool, True, "Send the `degraded` and `recovered` notices when a "
            "URL turns degraded (its `degraded` assertions failed failure_threshold times in a row) and "
            "back up."),
    Setting("alerts", "down_when", str, "majority", "For URLs with regions: how many regions must be down "
            "for the URL to be down (any, all, majority or a number); fewer make it partial, with no "
            "incident or notice. A URL may override it: url add --down-when.", check=accepts.down_when,
            numbers_as_text=True),
    Setting("alerts", "repeat_interval", str, "0", "Remind every DURATION (90s, 15m, 2h, 7d) while a URL "
            "stays down; 0 = never.", check=accepts.alerts("check_duration"), numbers_as_text=True),
    Setting("alerts", "max_attempts", int, 6, "Tries per notice and channel before it is marked dead "
            "(listed by `sitewatch incidents`).", check=accepts.between(1, 100)),
    Setting("alerts", "retry_backoff", float, 5.0, "Seconds before the first retry of a failed notice; "
            "doubled on each try (with jitter), at most one hour.", check=accepts.positive),
    Setting("alerts", "send_timeout", float, 30.0, "Hard deadline in seconds of one send to one channel: "
            "a hanging channel delays nothing else.", check=accepts.at_most(600)),
    Setting("alerts", "channels", dict, {}, "Notification channels: a map NAME -> Apprise URL (slack://, "
            "mailto://, json://, discord://, tgram://, ...). Secret: shown as scheme://*** only.",
            check=accepts.alerts("check_channels"), secret=True, redact=accepts.alerts("redact_channels")),
    Setting("alerts", "default_channels", list, None, "Channel names for URLs without url add --notify. "
            "Unset: every channel.", optional=True, check=accepts.alerts("check_default_channels")),
    Setting("alerts", "connectivity_url", str, None, "A URL that is up when this host's own network works "
            "(checked by the notifier); while it fails, this host's failed checks count toward no incident.",
            optional=True),
    Setting("history", "raw_days", int, 7, "Days raw results (task_result) are kept; whole daily "
            "partitions are dropped after that, once rolled up. The audit log is kept as long.",
            check=accepts.positive),
    Setting("history", "hourly_days", int, 90, "Days hourly rollups (rollup_hour) are kept.", check=accepts.positive),
    Setting("history", "daily_days", int, 1825, "Days daily rollups (rollup_day) are kept.", check=accepts.positive),
    Setting("history", "partitions_ahead", int, 7, "Days of task_result partitions created ahead (at least 3).",
            check=lambda v: None if v >= 3 else "must be at least 3"),
    Setting("history", "interval", float, 60.0, "Seconds between runs of the maintenance job (partitions, "
            "rollups, retention, the uptime summary) under `sitewatch run`. It adds new results to the "
            "uptime summary once 90 s of them are complete (every other run at 60 s): `status` and the web "
            "page read the rest raw, up to about this plus 100 s of them.", check=accepts.positive),
    Setting("metrics", "listen", str, "127.0.0.1:9464", "Address of the HTTP listener serving /metrics "
            "(Prometheus), /healthz and /readyz: HOST:PORT, [IPv6]:PORT or :PORT (all interfaces). "
            "Empty: off.", check=accepts.listen_address),
    Setting("metrics", "per_url", bool, False, "Also serve blackbox_exporter-compatible per-URL metrics "
            "(probe_success, probe_duration_seconds, probe_http_status_code, "
            "probe_ssl_earliest_cert_expiry, labelled with the redacted URL) from each URL's last result."),
    Setting("metrics", "per_url_limit", int, 1000, "At most this many URLs (the first by id) get per-URL "
            "metrics: every one is a series per metric.", check=accepts.positive),

    Setting("sentry", "dsn", str, None, "Sentry DSN: report unhandled exceptions and error log events "
            "from every process (secrets scrubbed). Unset: off, and the SDK is not even imported.",
            optional=True, secret=True),
    Setting("web", "listen", str, "127.0.0.1:8080", "Address of the status page, JSON API and badges "
            "(HOST:PORT); empty: no web server in `sitewatch run`.", check=accepts.listen_address),
    Setting("web", "auth", str, None, "Access control for the web server, space-separated entries: "
            "'token:SECRET' (Authorization: Bearer SECRET) and/or 'basic:USER:PASSWORD' (one per user). "
            "Unset: open to anyone who can reach web.listen.", optional=True, secret=True,
            check=accepts.web_auth, redact=accepts.redact_web_auth),
    Setting("web", "tokens", dict, {}, "Bearer tokens of the API, a map NAME -> {token: SECRET, scope: read|write}: "
            "a read token reads as a web.auth entry does; a write token also changes monitors and silences "
            "(the write API, off unless one is set); NAME is who the audit log names. ${VAR} in a token "
            "is read from the environment; not set, `web` and `run` (with web.listen) refuse to start, and "
            "other commands, which never need a token, go on. E.g. {ci: {token: "
            "${SITEWATCH_CI_TOKEN}, scope: write}, grafana: {token: ${GRAFANA_TOKEN}, scope: read}}. "
            "Tokens: at least 16 characters (openssl rand -hex 32).", secret=True,
            check=accepts.web_tokens, redact=accepts.redact_web_tokens),
    Setting("web", "public", str, "/badge/*", "Paths that stay open when web.auth is set, comma-separated; "
            "a trailing * matches a prefix (e.g. /badge/*,/ for public badges and overview)."),
    Setting("web", "frame_ancestors", str, "'none'", "CSP frame-ancestors: who may embed the pages in a "
            "frame, e.g. 'self' https://intranet.example.com. Default: nobody."),
    Setting("web", "request_timeout", float, 10.0, "Seconds a client has to send a complete request, from "
            "when it connects or from its previous response; then the connection is closed, so silent or "
            "half-sent requests hold no socket.", check=accepts.between(0.5, 3600)),
    Setting("web", "max_connections", int, 500, "Open connections at most (lowered to stay below the "
            "process's open-file limit). A new connection beyond it closes the one that has waited longest "
            "for its request; while every one is being answered, the new one is closed.",
            check=accepts.between(8, 1_000_000)),
    Setting("web", "base_url", str, None, "The address people reach the pages at, e.g. "
            "https://status.example.com/ (behind a proxy, with its path): the Atom feed's links and ids "
            "start with it. Unset: the feed's links are relative (never taken from the request's Host).",
            optional=True, check=accepts.base_url),
    Setting("web", "rate_limit", int, 30, "Expensive requests that miss the 5 s cache (a search, a page "
            "past the 1,000th URL or incident) each client (by IP address) may make a minute; more get 429. "
            "0: no limit.", check=accepts.between(0, 1_000_000)),
    Setting("web", "ping_rate_limit", int, 60, "Pings each push monitor's token may make a minute "
            "(/ping/TOKEN, in bursts of as many); more get 429, so a looping job cannot load the database. "
            "0: no limit.", check=accepts.between(0, 1_000_000)),

    Setting("log", "level", str, "info", "Log level.", check=accepts.one_of("debug", "info", "warning", "error")),
    Setting("log", "format", str, "auto", "console, json, ecs (Elastic Common Schema JSON, for ELK), or "
            "auto (console on a terminal, JSON otherwise).", check=accepts.one_of("auto", "console", "json", "ecs")),
]

SETTINGS_BY_NAME = {s.name: s for s in SETTINGS}
SECTIONS = list(dict.fromkeys(s.section for s in SETTINGS if s.section))
TOP_LEVEL = [s.key for s in SETTINGS if not s.section]


class Config:
    """The effective configuration: `cfg.consumer.concurrency`, plus the source of each value."""

    def __init__(self, values: dict, sources: dict, path: str | None):
        self.values = values        # "section.key" -> value
        self.sources = sources      # "section.key" -> "default" | "file PATH" | "env VAR" | "flag --x"
        self.path = path
        # (why, web.tokens as written) when they did not resolve where nothing serves them (load)
        self.unresolved_tokens = None
        for section in SECTIONS:
            ns = SimpleNamespace(**{s.key: values[s.name] for s in SETTINGS if s.section == section})
            setattr(self, section, ns)
        for key in TOP_LEVEL:
            setattr(self, key, values[key])

    def warnings(self) -> list[str]:
        """What `config show` and the web server warn of: a web listener open to the network, and
        web.tokens that `web` and `run` would refuse (see load)."""
        found = []
        if self.unresolved_tokens:
            found.append(f"{self.unresolved_tokens[0]}: `sitewatch web` and `sitewatch run` (with web.listen) "
                         f"refuse to start")
        listen = self.values["web.listen"]
        if not listen.strip() or self.values["web.auth"] is not None or _loopback(listen):
            return found
        return found + [f"web.listen {listen} is reachable from other hosts and web.auth is unset: anyone who "
                        f"can connect reads every monitored URL, its errors and incidents. Set web.auth, or "
                        f"listen on 127.0.0.1 behind a proxy that checks access."]

    def show(self) -> list[str]:
        """Lines for `sitewatch config show`, secrets redacted."""
        lines = []
        for s in SETTINGS:
            value = self.values[s.name]
            if s.name == "web.tokens" and self.unresolved_tokens:
                value = self.unresolved_tokens[1]      # names and scopes as written (warned of)
            shown = "null" if value is None else value
            if s.secret and isinstance(value, dict):
                shown = s.redact(value)
            elif s.secret and value is not None:
                shown = s.redact(str(value))
            if isinstance(value, bool):
                shown = "true" if value else "false"
            if isinstance(shown, str) and not shown.isprintable():
                # One line per setting: a newline (or other control character) in a value from
                # the file or the environment would otherwise split it, or fake a line.
                shown = repr(shown)
            lines.append(f"{s.name} = {shown}    ({self.sources[s.name]})")
        return lines


def _loopback(listen: str) -> bool:
    """True when HOST of HOST:PORT is a loopback address or localhost (a name that resolves
    elsewhere, an empty host or 0.0.0.0 is not)."""
    import ipaddress

    from .operations.listener import parse_listen
    try:
        host = parse_listen(listen)[0]
    except ValueError:
        return False
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _convert(setting: Setting, raw: Any, source: str, from_text: bool) -> Any:
    """Turn `raw` into the setting's type or raise ConfigError naming key, value and source."""
    shown = repr(raw)
    if setting.secret:   # a redactor only understands a string: of anything else, show only its type
        shown = (setting.redact(raw) if isinstance(raw, str) and setting.kind is str
                 else "a value not shown (it holds secrets)" if setting.kind is dict else f"a {type(raw).__name__}")

    def bad(why: str) -> ConfigError:
        return ConfigError(f"{setting.name}: {why}, got {shown} (from {source})")

    if raw is None or (from_text and setting.optional and str(raw).strip().lower() in ("", "null", "none")):
        if setting.optional:
            return None
        raise bad("must be set")
    kind = setting.kind
    if kind in (dict, list):
        if from_text:   # environment: YAML (or JSON) text
            try:
                raw = yaml.safe_load(str(raw))
            except yaml.YAMLError:
                raise bad(f"must be a YAML {'mapping' if kind is dict else 'list'}") from None
            if kind is list and isinstance(raw, str):     # NAME,NAME
                raw = [part.strip() for part in raw.split(",") if part.strip()]
        if not isinstance(raw, kind):
            raise bad(f"must be a {'mapping' if kind is dict else 'list'}")
        value = raw
    elif kind is bool:
        if isinstance(raw, bool):
            value = raw
        elif from_text and str(raw).strip().lower() in ("1", "true", "yes", "on"):
            value = True
        elif from_text and str(raw).strip().lower() in ("0", "false", "no", "off"):
            value = False
        else:
            raise bad("must be true or false")
    elif kind is int:
        if isinstance(raw, bool) or not (isinstance(raw, int) or from_text):
            raise bad("must be a whole number")
        try:
            value = int(str(raw).strip()) if from_text else raw
        except ValueError:
            raise bad("must be a whole number") from None
    elif kind is float:
        if isinstance(raw, bool) or not (isinstance(raw, (int, float)) or from_text):
            raise bad("must be a number")
        try:
            value = float(str(raw).strip()) if from_text else float(raw)
        except ValueError:
            raise bad("must be a number") from None
        except OverflowError:   # a YAML integer of 400 digits: float() cannot hold it (was exit 1)
            raise bad("must be a finite number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise bad("must be a finite number")
    else:
        if setting.numbers_as_text and isinstance(raw, (int, float)) and not isinstance(raw, bool):
            raw = str(raw)
        if not isinstance(raw, str) and not from_text:
            raise bad("must be a string")
        value = str(raw)
        if setting.key in ("level", "format"):
            value = value.strip().lower()
    if setting.check is not None:
        complaint = setting.check(value)
        if complaint:
            raise bad(complaint)
    return value


def read_file(path: str) -> dict:
    """Parse the YAML file into {"section.key": raw value}; unknown keys are errors."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    try:
        data = yaml.load(text, Loader=YamlLoader)     # noqa: S506 - a safe loader, libyaml's when built
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "malformed YAML"
        raise ConfigError(f"config file {path}: {problem}{where}") from None
    except RecursionError:
        # PyYAML parses recursively: deeply nested brackets exhaust the stack (was exit 1, a bug).
        raise ConfigError(f"config file {path}: malformed YAML: nested too deeply") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: must be a mapping of sections, got {type(data).__name__}")
    raw = {}
    for section, body in data.items():
        if section in TOP_LEVEL:          # a setting of its own, not a section: `region: eu`
            raw[section] = body
            continue
        if section not in SECTIONS:
            raise ConfigError(f"config file {path}: unknown section {section!r} "
                              f"(known: {', '.join(TOP_LEVEL + SECTIONS)})")
        if body is None:
            continue
        if not isinstance(body, dict):
            raise ConfigError(f"config file {path}: section {section!r} must be a mapping")
        for key, value in body.items():
            name = f"{section}.{key}"
            if name not in SETTINGS_BY_NAME:
                known = ", ".join(s.key for s in SETTINGS if s.section == section)
                raise ConfigError(f"config file {path}: unknown key {name!r} (known in {section}: {known})")
            raw[name] = value
    return raw


def find_config_path(flag_path: str | None, env: Mapping[str, str]) -> str | None:
    """--config PATH, else $SITEWATCH_CONFIG, else ./sitewatch.yaml when present."""
    if flag_path:
        return flag_path
    if env.get("SITEWATCH_CONFIG"):
        return env["SITEWATCH_CONFIG"]
    if os.path.exists("sitewatch.yaml"):
        return "sitewatch.yaml"
    return None


def load(env: Mapping[str, str], flags: Mapping[str, Any] | None = None,
         config_path: str | None = None, serves_web: bool = False) -> Config:
    """Build the effective Config. `flags` maps "section.key" to values from the command line.

    `serves_web`: the caller serves web.listen when it is set (`web`, `run` and its reload),
    so web.tokens must resolve (`${VAR}` set, long enough) or the configuration is refused.
    Other commands never read a token: one that does not resolve is only a warning there
    (Config.warnings), so a host or a CI job without the API's secrets can run them."""
    path = find_config_path(config_path, env)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for s in SETTINGS:
        values[s.name], sources[s.name] = s.default, "default"

    if path is not None:
        for name, raw in read_file(path).items():
            source = f"file {path}"
            values[name] = _convert(SETTINGS_BY_NAME[name], raw, source, from_text=False)
            sources[name] = source

    # Aliases first, so the SITEWATCH_ spelling wins when both are set.
    for var, (section, key) in ENV_ALIASES.items():
        if var in env:
            name = f"{section}.{key}"
            values[name] = _convert(SETTINGS_BY_NAME[name], env[var], f"env {var}", from_text=True)
            sources[name] = f"env {var}"
    for var, text in env.items():
        if not var.startswith(ENV_PREFIX) or var == "SITEWATCH_CONFIG" or var.startswith("SITEWATCH_TEST"):
            continue
        section, sep, key = var[len(ENV_PREFIX):].lower().partition("__")
        name = f"{section}.{key}" if sep else section     # SITEWATCH_REGION: a top-level setting
        if (not sep and section not in TOP_LEVEL) or name not in SETTINGS_BY_NAME:
            raise ConfigError(f"unknown environment variable {var} (expected SITEWATCH_<SECTION>__<KEY>, "
                              f"e.g. SITEWATCH_CONSUMER__CONCURRENCY)")
        values[name] = _convert(SETTINGS_BY_NAME[name], text, f"env {var}", from_text=True)
        sources[name] = f"env {var}"

    for name, (value, flag) in (flags or {}).items():
        if value is None:
            continue
        values[name] = _convert(SETTINGS_BY_NAME[name], value, f"flag {flag}", from_text=False)
        sources[name] = f"flag {flag}"

    if values["check.min_period"] > values["check.max_period"]:
        raise ConfigError(f"check.min_period ({values['check.min_period']}, {sources['check.min_period']}) "
                          f"is above check.max_period ({values['check.max_period']}, "
                          f"{sources['check.max_period']})")
    if sources["check.default_period"] == "default":
        # Narrowed limits (say MAX_PERIOD=30) move the built-in default along with them.
        values["check.default_period"] = min(max(values["check.default_period"], values["check.min_period"]),
                                             values["check.max_period"])
    elif not values["check.min_period"] <= values["check.default_period"] <= values["check.max_period"]:
        raise ConfigError(f"check.default_period ({values['check.default_period']}, "
                          f"{sources['check.default_period']}) must be within check.min_period.."
                          f"check.max_period ({values['check.min_period']}..{values['check.max_period']})")
    unknown = [n for n in values["alerts.default_channels"] or [] if n not in values["alerts.channels"]]
    if unknown:
        raise ConfigError(f"alerts.default_channels names {unknown[0]!r}, which is not in alerts.channels "
                          f"({sources['alerts.default_channels']})")
    unresolved = None
    if values["web.tokens"]:
        from .web import tokens
        try:
            values["web.tokens"] = tokens.resolve(values["web.tokens"], env)
        except ValueError as e:     # the message names the variable, never a value
            unresolved = f"web.tokens: {e} ({sources['web.tokens']})"
            if serves_web and values["web.listen"].strip():
                raise ConfigError(unresolved) from None
            written, values["web.tokens"] = values["web.tokens"], {}   # no half-resolved token is kept
    if values["database.data_dir"] is None:
        values["database.data_dir"] = default_data_dir(env)
    cfg = Config(values, sources, path)
    if unresolved:
        cfg.unresolved_tokens = (unresolved, written)
    return cfg
