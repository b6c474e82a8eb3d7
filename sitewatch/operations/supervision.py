"""What `sitewatch run`'s supervisor runs for operators: the metrics registry, the
health checks and the HTTP listener that serves both (metrics.listen)."""

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from .. import logs
from ..db.database import Reconnecting
from .health import Health
from .listener import Listener
from .registry import ClusterGauges, Metrics


class Operations:
    def __init__(self, listen: str = "", heartbeat_timeout: float = 30.0, per_url_limit: int | None = None):
        self.metrics = Metrics()
        self.per_url_limit = per_url_limit     # None: no blackbox-compatible per-URL metrics
        # A child is not ready once half its heartbeat timeout passed without a beat (the
        # supervisor kills it at the full timeout).
        self.health = Health(self._ping, stale_after=heartbeat_timeout / 2)
        self.listener = None
        if listen.strip():
            registry = CollectorRegistry(auto_describe=False)
            registry.register(self.metrics)
            ProcessCollector(registry=registry)      # the supervisor's own process_* metrics
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
            # Bind now, before the database or any child starts: a port in use is bad input.
            self.listener = Listener(listen, registry, self.health)

    def _ping(self) -> bool:
        return self.metrics.cluster is not None and self.metrics.cluster.ping()

    def start(self, database) -> None:
        """Serve, now that the database is known (its connection is opened on first use)."""
        if self.listener is None:
            return
        db = Reconnecting(database.dsn, database.timeout, "metrics", logs.get())
        self.metrics.cluster = ClusterGauges(db, per_url_limit=self.per_url_limit)
        self.listener.start()

    def describe(self) -> str | None:
        """For the start log line: where /metrics is served, or None when off."""
        if self.listener is None:
            return None
        host = self.listener.server.server_address[0]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.listener.port}/metrics"

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
        if self.metrics.cluster is not None:
            self.metrics.cluster.close()
