"""Installing: pip builds from a checkout it may not write to (pyproject.toml + setup.py)."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# Uses no SITEWATCH_TEST_DSN server: CI runs it in its first (embedded) pass only (.ci/run).
pytestmark = pytest.mark.serverless

ROOT = Path(__file__).resolve().parent.parent


def ordinary_user_python() -> list[str]:
    """A command running a Python with pip as an ordinary user. Root writes through read-only
    permissions, so as root the build runs as `nobody`, with a Python that `nobody` may run."""
    if os.geteuid() != 0:
        return [sys.executable]
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: cannot build as an ordinary user")
    prefix = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    probe = "import subprocess, sys; subprocess.run([sys.executable, '-m', 'pip', '--version'], check=True)"
    for python in ("/usr/bin/python3", sys.executable):     # a venv under /root is not theirs to run
        if subprocess.run([*prefix, python, "-c", probe], capture_output=True).returncode == 0:
            return [*prefix, python]
    pytest.skip("no Python with pip that the user nobody may run")


@pytest.mark.slow
def test_pip_builds_a_wheel_from_a_checkout_it_cannot_write():
    """Another user's checkout: pip's PEP 517 build works and writes nothing into it."""
    python = ordinary_user_python()
    work = Path(tempfile.mkdtemp(prefix="sitewatch-install-"))     # not pytest's 0700 tmp_path
    try:
        checkout = work / "checkout"
        shutil.copytree(ROOT, checkout, ignore=shutil.ignore_patterns(
            ".git", ".tox", "*.egg-info", "build", "__pycache__", ".venv", "venv", ".coverage*"))
        for path in [checkout, *checkout.rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o222 | 0o444 | (0o111 if path.is_dir() else 0))
        wheels, home = work / "wheels", work / "home"
        wheels.mkdir()
        home.mkdir()
        work.chmod(0o755)
        if python[0] == "setpriv":
            shutil.chown(wheels, "nobody")
            shutil.chown(home, "nobody")
        before = sorted(p.relative_to(checkout) for p in checkout.rglob("*"))
        result = subprocess.run([*python, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir",
                                 "-w", str(wheels), str(checkout)],
                                capture_output=True, text=True, timeout=600, cwd=home,
                                env={**os.environ, "HOME": str(home)})
        assert result.returncode == 0, result.stdout + result.stderr
        assert "legacy" not in result.stderr, result.stderr
        assert list(wheels.glob("sitewatch-*.whl")), result.stdout
        assert sorted(p.relative_to(checkout) for p in checkout.rglob("*")) == before
    finally:
        for path in [work, *work.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o700)
        shutil.rmtree(work)
