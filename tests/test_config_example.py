"""config.example.yaml is generated from the settings table: it must not drift."""

import os
import subprocess
import sys

import pytest

# Uses no SITEWATCH_TEST_DSN server: CI runs it in its first (embedded) pass only (.ci/run).
pytestmark = pytest.mark.serverless

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_config_example_matches_the_settings_table():
    generated = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gen_config_example.py")],
                               capture_output=True, text=True, check=True, cwd=ROOT).stdout
    with open(os.path.join(ROOT, "config.example.yaml"), encoding="utf-8") as f:
        assert f.read() == generated, "run: python tools/gen_config_example.py > config.example.yaml"


def test_the_import_example_in_its_header_is_a_valid_import_file():
    """The header shows a monitor of each kind, with assertions (issues 19 and 20): every entry
    must pass `url import`'s own validation, and each kind must be there."""
    from sitewatch import config
    from sitewatch.manage.importfile import parse_import
    with open(os.path.join(ROOT, "config.example.yaml"), encoding="utf-8") as f:
        header = f.read().split("E.g. an import file:\n", 1)[1].split("\n\n", 1)[0]
    block = "\n".join(line[2:] for line in header.splitlines())
    entries = parse_import(block, "config.example.yaml", config.load({}).check)
    assert len(entries) == 6
    for kind in ("https", "tcp", "tls", "dns", "icmp", "push"):
        assert f"- url: {kind}://" in block
    assert "assert:" in block and "degraded:" in block
