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
