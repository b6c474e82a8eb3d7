"""Operations: what an operator watches a running sitewatch with.

* metrics.py: the counters children send over their stats pipes, folded into one
  Prometheus registry in the supervisor (no multiprocess directory mode);
* listener.py: the HTTP listener on metrics.listen (/metrics, /healthz, /readyz);
* health.py: liveness and readiness of the supervisor and its children;
* sentry.py: optional error reporting from every process;
* ecs.py: Elastic Common Schema log lines (log.format: ecs).
"""
