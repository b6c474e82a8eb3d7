# sitewatch: a small image whose default command is `sitewatch run`.
# Configure it with environment variables (DB_DSN or SITEWATCH_DATABASE__DSN, SITEWATCH_<SECTION>__<KEY>).
# Without a DSN it runs the embedded PostgreSQL in /data (mount a volume there to keep results).
# Note: this file is not built in CI (no Docker engine on the build machines).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    SITEWATCH_DATABASE__DATA_DIR=/data/postgres \
    SITEWATCH_SUPERVISOR__GRACE_PERIOD=8 \
    SITEWATCH_LOG__FORMAT=json \
    SITEWATCH_METRICS__LISTEN=0.0.0.0:9464 \
    SITEWATCH_WEB__LISTEN=0.0.0.0:8080

WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY sitewatch ./sitewatch
RUN pip install . \
    && useradd --create-home --uid 10001 sitewatch \
    && mkdir -p /data && chown sitewatch:sitewatch /data

# PostgreSQL refuses to run as root; an unprivileged user also suits the checks.
USER sitewatch
VOLUME ["/data"]
# /metrics, /healthz and /readyz (metrics.listen; 127.0.0.1 would be unreachable from outside).
EXPOSE 9464
# The status page, JSON API and badges (web.listen; read-only; set web.auth to restrict it).
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/readyz', timeout=3)"]

# SIGTERM from `docker stop` is a graceful stop: in-flight checks finish within
# supervisor.grace_period (8 s here, inside docker stop's default 10 s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["sitewatch"]
CMD ["run"]
