"""sitewatch.config.load: defaults < file < environment < flags (DESIGN.md section 6).

load() is pure: the environment and the flags are arguments, so these are plain unit tests.
"""

import re
from pathlib import Path

import pytest
import yaml

from sitewatch import config
from sitewatch.errors import BadInput, ConfigError

# Uses no SITEWATCH_TEST_DSN server: CI runs it in its first (embedded) pass only (.ci/run).
pytestmark = pytest.mark.serverless

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def no_stray_config(tmp_path, monkeypatch):
    """load() also looks for ./sitewatch.yaml: run each test in an empty directory."""
    monkeypatch.chdir(tmp_path)


def write(tmp_path, text, name="sw.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# A value different from the default, as text (environment) and as YAML/flag value, for each setting.
def sample(setting):
    if setting.name == "database.dsn":
        return "postgresql://sw@db.example/sw", "postgresql://sw@db.example/sw"
    if setting.name == "database.data_dir":
        return "/srv/sitewatch/pg", "/srv/sitewatch/pg"
    if setting.name == "check.expected_status":
        return "200-299,301", "200-299,301"
    if setting.name == "log.level":
        return "debug", "debug"
    if setting.name == "check.engine":
        return "urllib3", "urllib3"
    if setting.name == "check.source_address":
        return "127.0.0.2", "127.0.0.2"       # any loopback address is this host's
    if setting.name == "web.listen":
        return "0.0.0.0:9090", "0.0.0.0:9090"
    if setting.name == "web.auth":
        return "token:abc basic:alice:pw", "token:abc basic:alice:pw"
    if setting.name in ("web.public", "web.frame_ancestors"):
        return "/status", "/status"
    if setting.name == "log.format":
        return "json", "json"
    if setting.name == "metrics.listen":
        return "[::1]:9100", "[::1]:9100"
    if setting.name == "sentry.dsn":
        return "https://key@sentry.example/1", "https://key@sentry.example/1"
    if setting.name == "alerts.repeat_interval":
        return "2h", "2h"
    if setting.name == "alerts.channels":
        return '{"ops": "json://127.0.0.1:9/hook"}', {"ops": "json://127.0.0.1:9/hook"}
    if setting.name == "alerts.default_channels":
        return "[]", []
    if setting.name == "web.tokens":
        return ('{"ci": {"token": "0123456789abcdef-ci", "scope": "write"}}',
                {"ci": {"token": "0123456789abcdef-ci", "scope": "write"}})
    if setting.name == "alerts.connectivity_url":
        return "http://127.0.0.1:9/", "http://127.0.0.1:9/"
    if setting.name == "web.base_url":
        return "https://status.example.com/", "https://status.example.com/"
    if setting.name == "web.max_connections":           # at least 8
        return "70", 70
    if setting.name == "region":
        return "eu-west", "eu-west"
    if setting.name == "check.regions":
        return "eu,us", ["eu", "us"]
    if setting.name == "alerts.down_when":
        return "all", "all"
    if setting.kind is bool:
        return "false", False
    if setting.kind is int:
        return "7", 7
    if setting.kind is float:
        return "7.5", 7.5
    raise AssertionError(f"no sample for {setting.name}")


def test_defaults_when_nothing_is_configured(tmp_path):
    cfg = config.load({"HOME": str(tmp_path)})
    for s in config.SETTINGS:
        assert cfg.sources[s.name] == "default"
        if s.name != "database.data_dir":
            assert cfg.values[s.name] == s.default
    assert cfg.check.min_period == 5 and cfg.check.max_period == 300
    assert cfg.database.dsn is None
    assert cfg.path is None


def test_data_dir_default_follows_xdg_then_home(tmp_path):
    cfg = config.load({"HOME": "/home/alice", "XDG_DATA_HOME": "/data/alice"})
    assert cfg.database.data_dir == "/data/alice/sitewatch/postgres"
    cfg = config.load({"HOME": "/home/alice"})
    assert cfg.database.data_dir == "/home/alice/.local/share/sitewatch/postgres"


def test_each_level_overrides_the_previous_with_its_source(tmp_path):
    path = write(tmp_path, "check:\n  timeout: 8\n  max_period: 200\n  min_period: 6\n"
                           "consumer:\n  concurrency: 20\n")
    env = {"SITEWATCH_CHECK__TIMEOUT": "6", "SITEWATCH_CHECK__MAX_PERIOD": "250"}
    flags = {"check.timeout": (4.0, "--timeout"), "consumer.processes": (None, "--consumers")}
    cfg = config.load(env, flags, path)

    assert (cfg.check.timeout, cfg.sources["check.timeout"]) == (4.0, "flag --timeout")
    assert (cfg.check.max_period, cfg.sources["check.max_period"]) == (250, "env SITEWATCH_CHECK__MAX_PERIOD")
    assert (cfg.check.min_period, cfg.sources["check.min_period"]) == (6, f"file {path}")
    assert (cfg.consumer.concurrency, cfg.sources["consumer.concurrency"]) == (20, f"file {path}")
    assert (cfg.check.default_period, cfg.sources["check.default_period"]) == (60, "default")
    # A flag that was not given (None) does not override anything.
    assert (cfg.consumer.processes, cfg.sources["consumer.processes"]) == (None, "default")
    assert cfg.path == path


@pytest.mark.parametrize("levels", [
    ["file"], ["env"], ["flag"], ["file", "env"], ["file", "flag"], ["env", "flag"], ["file", "env", "flag"]])
def test_highest_level_wins(tmp_path, levels):
    values = {"file": 11, "env": 22, "flag": 33}
    path = write(tmp_path, f"consumer:\n  concurrency: {values['file']}\n") if "file" in levels else None
    env = {"SITEWATCH_CONSUMER__CONCURRENCY": str(values["env"])} if "env" in levels else {}
    flags = {"consumer.concurrency": (values["flag"], "--concurrency")} if "flag" in levels else {}
    cfg = config.load(env, flags, path)
    top = levels[-1]
    assert cfg.consumer.concurrency == values[top]
    expected_source = {"file": f"file {path}", "env": "env SITEWATCH_CONSUMER__CONCURRENCY",
                       "flag": "flag --concurrency"}[top]
    assert cfg.sources["consumer.concurrency"] == expected_source


def test_config_file_location(tmp_path):
    flag_file = write(tmp_path, "consumer:\n  concurrency: 1\n", "flag.yaml")
    env_file = write(tmp_path, "consumer:\n  concurrency: 2\n", "env.yaml")
    write(tmp_path, "consumer:\n  concurrency: 3\n", "sitewatch.yaml")          # in the working directory

    assert config.load({"SITEWATCH_CONFIG": env_file}, None, flag_file).consumer.concurrency == 1
    assert config.load({"SITEWATCH_CONFIG": env_file}).consumer.concurrency == 2
    cfg = config.load({})
    assert cfg.consumer.concurrency == 3
    assert cfg.sources["consumer.concurrency"] == "file sitewatch.yaml"


def test_empty_config_file_means_defaults(tmp_path):
    cfg = config.load({}, None, write(tmp_path, "# nothing here\n"))
    assert all(source == "default" for source in cfg.sources.values())


@pytest.mark.parametrize("alias, name, text, value", [
    ("DB_DSN", "database.dsn", "postgresql://u@h/db", "postgresql://u@h/db"),
    ("DB_TIMEOUT", "database.timeout", "2.5", 2.5),
    ("MIN_PERIOD", "check.min_period", "10", 10),
    ("MAX_PERIOD", "check.max_period", "100", 100),
    ("HTTP_REQUEST_TIMEOUT", "check.timeout", "3", 3.0),
])
def test_seed_variable_names_are_aliases(alias, name, text, value):
    cfg = config.load({alias: text})
    assert cfg.values[name] == value
    assert cfg.sources[name] == f"env {alias}"


@pytest.mark.parametrize("alias, name, text", [
    ("DB_DSN", "database.dsn", "postgresql://u@alias/db"),
    ("DB_TIMEOUT", "database.timeout", "2.5"),
    ("MIN_PERIOD", "check.min_period", "10"),
    ("MAX_PERIOD", "check.max_period", "100"),
    ("HTTP_REQUEST_TIMEOUT", "check.timeout", "3"),
])
def test_sitewatch_name_wins_over_alias(alias, name, text):
    setting = config.SETTINGS_BY_NAME[name]
    preferred_text, preferred = {
        "database.dsn": ("postgresql://u@preferred/db", "postgresql://u@preferred/db"),
        "database.timeout": ("7.5", 7.5), "check.min_period": ("20", 20), "check.max_period": ("200", 200),
        "check.timeout": ("9", 9.0)}[name]
    # Both orders of the environment mapping: the result must not depend on it.
    for env in ({alias: text, setting.env_var: preferred_text},
                {setting.env_var: preferred_text, alias: text}):
        cfg = config.load(env)
        assert cfg.values[name] == preferred
        assert cfg.sources[name] == f"env {setting.env_var}"


def test_alias_overrides_the_file(tmp_path):
    path = write(tmp_path, "check:\n  min_period: 30\n")
    cfg = config.load({"MIN_PERIOD": "15"}, None, path)
    assert (cfg.check.min_period, cfg.sources["check.min_period"]) == (15, "env MIN_PERIOD")


@pytest.mark.parametrize("setting", config.SETTINGS, ids=lambda s: s.env_var)
def test_every_setting_can_be_set_from_its_environment_variable(setting):
    text, value = sample(setting)
    if setting.section:
        assert setting.env_var == f"SITEWATCH_{setting.section.upper()}__{setting.key.upper()}"
    else:                    # top-level (`region`): SITEWATCH_REGION
        assert setting.env_var == f"SITEWATCH_{setting.key.upper()}"
    cfg = config.load({setting.env_var: text})
    assert cfg.values[setting.name] == value
    assert getattr(getattr(cfg, setting.section) if setting.section else cfg, setting.key) == value
    assert cfg.sources[setting.name] == f"env {setting.env_var}"


@pytest.mark.parametrize("setting", config.SETTINGS, ids=lambda s: s.name)
def test_every_setting_can_be_set_from_the_file(tmp_path, setting):
    _, value = sample(setting)
    path = write(tmp_path, yaml.safe_dump({setting.section: {setting.key: value}} if setting.section
                                          else {setting.key: value}))
    cfg = config.load({}, None, path)
    assert cfg.values[setting.name] == value
    assert cfg.sources[setting.name] == f"file {path}"


@pytest.mark.parametrize("text, value", [("true", True), ("YES", True), ("1", True), ("on", True),
                                         ("false", False), ("No", False), ("0", False), ("off", False)])
def test_booleans_from_the_environment(text, value):
    assert config.load({"SITEWATCH_CHECK__VERIFY_TLS": text}).check.verify_tls is value


def test_optional_setting_can_be_unset_from_the_environment(tmp_path):
    path = write(tmp_path, "consumer:\n  processes: 4\n")
    cfg = config.load({"SITEWATCH_CONSUMER__PROCESSES": ""}, None, path)
    assert cfg.consumer.processes is None
    assert cfg.sources["consumer.processes"] == "env SITEWATCH_CONSUMER__PROCESSES"


# --- Errors name the key, the value and where it came from ------------------------------------------

def test_min_period_above_max_period_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"check\.min_period.*above check\.max_period"):
        config.load({"MIN_PERIOD": "301"})
    path = write(tmp_path, "check:\n  max_period: 50\n")
    with pytest.raises(ConfigError) as e:
        config.load({"SITEWATCH_CHECK__MIN_PERIOD": "60"}, None, path)
    assert "env SITEWATCH_CHECK__MIN_PERIOD" in str(e.value) and f"file {path}" in str(e.value)
    cfg = config.load({"MIN_PERIOD": "50"}, None, path)              # equal is fine
    assert cfg.check.min_period == cfg.check.max_period == 50


def test_config_errors_are_bad_input():
    # The CLI turns BadInput into exit code 2.
    assert issubclass(ConfigError, BadInput)


def test_unknown_key_in_file(tmp_path):
    path = write(tmp_path, "consumer:\n  concurency: 5\n")
    with pytest.raises(ConfigError) as e:
        config.load({}, None, path)
    assert "consumer.concurency" in str(e.value) and path in str(e.value)


def test_unknown_section_in_file(tmp_path):
    path = write(tmp_path, "consumers:\n  concurrency: 5\n")
    with pytest.raises(ConfigError, match="consumers"):
        config.load({}, None, path)


@pytest.mark.parametrize("yaml_text, name, shown", [
    ("check:\n  timeout: soon\n", "check.timeout", "'soon'"),
    ("check:\n  timeout: true\n", "check.timeout", "True"),
    ("check:\n  timeout: -1\n", "check.timeout", "-1"),
    ("check:\n  default_period: 1.5\n", "check.default_period", "1.5"),
    ("check:\n  verify_tls: sometimes\n", "check.verify_tls", "'sometimes'"),
    ("check:\n  expected_status: lots\n", "check.expected_status", "'lots'"),
    ("consumer:\n  concurrency: [1, 2]\n", "consumer.concurrency", "[1, 2]"),
    ("log:\n  level: loud\n", "log.level", "'loud'"),
    ("consumer:\n  concurrency: null\n", "consumer.concurrency", "None"),
])
def test_bad_value_in_file_names_key_value_and_file(tmp_path, yaml_text, name, shown):
    path = write(tmp_path, yaml_text)
    with pytest.raises(ConfigError) as e:
        config.load({}, None, path)
    message = str(e.value)
    assert name in message and shown in message and f"file {path}" in message


@pytest.mark.parametrize("var, text, name", [
    ("SITEWATCH_CHECK__TIMEOUT", "soon", "check.timeout"),
    ("SITEWATCH_CHECK__TIMEOUT", "nan", "check.timeout"),
    ("SITEWATCH_CONSUMER__CONCURRENCY", "0", "consumer.concurrency"),
    ("SITEWATCH_CONSUMER__CONCURRENCY", "2.5", "consumer.concurrency"),
    ("SITEWATCH_CHECK__VERIFY_TLS", "maybe", "check.verify_tls"),
    ("SITEWATCH_LOG__FORMAT", "xml", "log.format"),
    ("DB_TIMEOUT", "abc", "database.timeout"),
    ("MAX_PERIOD", "ten", "check.max_period"),
])
def test_bad_value_from_environment_names_key_value_and_variable(var, text, name):
    with pytest.raises(ConfigError) as e:
        config.load({var: text})
    message = str(e.value)
    assert name in message and repr(text) in message and f"env {var}" in message


def test_bad_flag_value_names_the_flag():
    with pytest.raises(ConfigError, match=r"consumer\.processes.*flag --consumers"):
        config.load({}, {"consumer.processes": (0, "--consumers")})


@pytest.mark.parametrize("var", ["SITEWATCH_NOPE", "SITEWATCH_CHECK__NOPE", "SITEWATCH_NOPE__TIMEOUT",
                                 "SITEWATCH_CHECK_TIMEOUT"])
def test_unknown_sitewatch_variable_is_an_error(var):
    with pytest.raises(ConfigError, match=var):
        config.load({var: "1"})


def test_unrelated_environment_is_ignored():
    cfg = config.load({"PATH": "/usr/bin", "TIMEOUT": "1", "SITEWATCHER": "x", "PERIOD": "1"})
    assert all(source == "default" for source in cfg.sources.values())


def test_missing_and_malformed_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        config.load({}, None, str(tmp_path / "missing.yaml"))
    path = write(tmp_path, "check:\n  timeout: 5\n  min_period: 5: 6\n")
    with pytest.raises(ConfigError, match="line 3"):
        config.load({}, None, path)


def test_secret_dsn_is_redacted_in_show_and_errors(tmp_path):
    cfg = config.load({"DB_DSN": "postgresql://sw:canarypw@db.example/sw"})
    shown = "\n".join(cfg.show())
    assert "db.example" in shown and "canarypw" not in shown
    path = write(tmp_path, "database:\n  dsn: [postgresql://sw:canarypw@db.example/sw]\n")
    with pytest.raises(ConfigError) as e:
        config.load({}, None, path)
    assert "database.dsn" in str(e.value) and "canarypw" not in str(e.value)


def test_show_lists_every_setting_with_its_source(tmp_path):
    path = write(tmp_path, "check:\n  timeout: 8\n")
    lines = config.load({"MIN_PERIOD": "7"}, None, path).show()
    assert len(lines) == len(config.SETTINGS)
    by_name = {line.split(" = ")[0]: line for line in lines}
    assert by_name["check.timeout"].endswith(f"(file {path})")
    assert by_name["check.min_period"].endswith("(env MIN_PERIOD)")
    assert by_name["check.max_period"].endswith("(default)")


# --- config.example.yaml ---------------------------------------------------------------------------

def example_path():
    path = REPO / "config.example.yaml"
    if not path.exists():
        pytest.skip("config.example.yaml not written yet")
    return path


def test_config_example_loads():
    path = example_path()
    cfg = config.load({}, None, str(path))
    for s in config.SETTINGS:
        assert cfg.sources[s.name] == f"file {path}", f"{s.name} is not set in config.example.yaml"


def test_config_example_documents_every_key_with_its_default():
    path = example_path()
    text = path.read_text()
    data = yaml.safe_load(text)
    assert set(data) == set(config.SECTIONS) | set(config.TOP_LEVEL)
    # Which keys have a comment right above them.
    commented, section, previous = set(), None, ""
    for line in text.splitlines():
        if re.match(r"^\w+:\s*(#.*)?$", line):
            section = line.split(":")[0]
        elif match := re.match(r"^(\w+): ", line):         # a top-level setting
            if previous.strip().startswith("#"):
                commented.add(match.group(1))
        elif match := re.match(r"^\s+(\w+):", line):
            if previous.strip().startswith("#"):
                commented.add(f"{section}.{match.group(1)}")
        previous = line
    for s in config.SETTINGS:
        if not s.section:          # top-level (`region`)
            assert data[s.key] == s.default and s.key in commented, f"{s.name} in config.example.yaml"
            continue
        assert s.key in data[s.section], f"{s.name} missing from config.example.yaml"
        assert data[s.section][s.key] == s.default, \
            f"{s.name}: example says {data[s.section][s.key]!r}, default is {s.default!r}"
        assert s.name in commented, f"{s.name} has no comment in config.example.yaml"
