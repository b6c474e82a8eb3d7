"""The deployment examples match what sitewatch accepts (no Docker engine or systemd here to run them).

docker-compose.yml, the Dockerfile and docs/sitewatch.service are parsed; every command
they give sitewatch must parse with its real argument parser, every environment key
must be one sitewatch reads (and its value valid), and the ports they expose or probe
must be the one metrics.listen binds.
"""

import json
import os
import re
import shlex

import pytest
import yaml

from sitewatch import cli, config

# Uses no SITEWATCH_TEST_DSN server: CI runs it in its first (embedded) pass only (.ci/run).
pytestmark = pytest.mark.serverless

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(name: str) -> str:
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        return f.read()


def substitute(value) -> str:
    """Compose's ${VAR:-default} and ${VAR}, with the variables unset (the defaults apply)."""
    return re.sub(r"\$\{[A-Z_]+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", str(value))


def assert_sitewatch_reads(env: dict, where: str) -> config.Config:
    """Every key is a variable sitewatch reads, and the values load as a configuration."""
    for key in env:
        assert key in config.ENV_ALIASES or key.startswith(config.ENV_PREFIX) or key.startswith("PYTHON") \
            or key == "PIP_NO_CACHE_DIR", f"{where}: sitewatch does not read {key}"
    return config.load({k: v for k, v in env.items() if not k.startswith(("PYTHON", "PIP_"))})


def assert_parses(argv: list[str], where: str):
    try:
        return cli.build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{where}: `sitewatch {' '.join(argv)}` is not a valid command line")


def listen_port(cfg) -> int:
    return int(cfg.metrics.listen.rpartition(":")[2])


def probed_port(command: str) -> tuple[int, str]:
    match = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", command)
    assert match, f"no probe URL in {command!r}"
    return int(match.group(1)), match.group(2)


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(read("docker-compose.yml"))


def test_compose_runs_sitewatch_with_keys_and_ports_it_accepts(compose):
    service = compose["services"]["sitewatch"]
    assert service["build"] == "."
    args = assert_parses(service["command"], "docker-compose.yml command")
    assert args.command == "run"
    env = {key: substitute(value) for key, value in service["environment"].items()}
    cfg = assert_sitewatch_reads(env, "docker-compose.yml")
    assert cfg.database.dsn.startswith("postgresql://") and "@postgres:5432/" in cfg.database.dsn
    assert cfg.log.format == "ecs"
    port = listen_port(cfg)
    assert cfg.metrics.listen.startswith("0.0.0.0:"), "reachable from Prometheus in the compose network"
    web_port = int(cfg.web.listen.rpartition(":")[2])
    assert cfg.web.listen.startswith("0.0.0.0:"), "the status page reachable in the compose network"
    assert [int(p) for p in service["expose"]] == [port, web_port]
    assert "ports" not in service, "a fixed host port would collide under --scale"
    probe_port, path = probed_port(" ".join(service["healthcheck"]["test"]))
    assert (probe_port, path) == (port, "/readyz")
    compile(service["healthcheck"]["test"][-1], "healthcheck", "exec")
    assert cfg.supervisor.grace_period < float(service["stop_grace_period"].rstrip("s"))


def test_compose_database_matches_the_dsn(compose):
    postgres = compose["services"]["postgres"]["environment"]
    dsn = substitute(compose["services"]["sitewatch"]["environment"]["DB_DSN"])
    user, password = substitute(postgres["POSTGRES_USER"]), substitute(postgres["POSTGRES_PASSWORD"])
    assert dsn == f"postgresql://{user}:{password}@postgres:5432/{substitute(postgres['POSTGRES_DB'])}"


def test_every_command_in_the_compose_comments_parses():
    commands = re.findall(r"docker compose run --rm sitewatch ([^#\n]+)", read("docker-compose.yml"))
    assert len(commands) >= 2
    for line in commands:
        args = assert_parses(shlex.split(line), "docker-compose.yml comment")
        assert args.command == "url"
    scrape = re.search(r"dns_sd_configs:.*?port: (\d+)", read("docker-compose.yml"), re.S)
    assert scrape and int(scrape.group(1)) == 9464


def test_dockerfile_environment_entrypoint_and_port():
    text = read("Dockerfile")
    env_block = re.search(r"^ENV (.*?)(?=\n\n)", text, re.S | re.M).group(1)
    env = dict(pair.split("=", 1) for pair in re.findall(r"(\w+=\S+)", env_block))
    cfg = assert_sitewatch_reads(env, "Dockerfile")
    port = listen_port(cfg)
    assert re.search(r"^EXPOSE (\d+)$", text, re.M).group(1) == str(port)
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (.*)$", text, re.M).group(1))
    command = json.loads(re.search(r"^CMD (.*)$", text, re.M).group(1))
    assert entrypoint == ["sitewatch"]
    assert assert_parses(command, "Dockerfile CMD").command == "run"
    healthcheck = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])$", text, re.S | re.M).group(1)
    assert probed_port(healthcheck) == (port, "/readyz")
    assert cfg.supervisor.grace_period < 10, "inside docker stop's default 10 s"


def test_systemd_unit_runs_a_valid_command_with_keys_sitewatch_reads():
    text = read("docs/sitewatch.service")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    settings = {}
    env = {}
    for line in lines:
        key, _, value = line.partition("=")
        if key == "Environment":
            name, _, val = value.partition("=")
            env[name] = val
        else:
            settings[key] = value
    exec_start = shlex.split(settings["ExecStart"])
    assert exec_start[0].endswith("/sitewatch")
    args = assert_parses(exec_start[1:], "ExecStart")
    assert args.command == "run"
    cfg = assert_sitewatch_reads(env, "docs/sitewatch.service")
    assert listen_port(cfg) == 9464
    # The secrets file's example lines, too.
    example = dict(re.findall(r"^#   ([A-Z_]+)=(\S+)$", text, re.M))
    assert set(example) == {"DB_DSN", "SENTRY_DSN"}
    assert_sitewatch_reads(example, "the EnvironmentFile example")
    assert cfg.supervisor.grace_period < float(settings["TimeoutStopSec"])
    assert settings["RestartPreventExitStatus"] == "2"    # bad configuration: retrying will not help
