"""A per-client limit on expensive requests (web.rate_limit) and on failed authentications
(auth.AUTH_FAILURES_PER_MINUTE): a token bucket per IP address.

Only requests that reach a handler are counted, that is those the response cache did not
answer (app.ResponseCache sits outside the routes), and only the expensive kinds (a search,
a deep OFFSET): everyone reading the same pages costs one rendering every few seconds anyway.
Starlette and uvicorn offer no rate limiting, and a bucket is a few lines; a library such as
slowapi would bring its own storage layer for what is one dict here.
"""

import threading
import time

MAX_CLIENTS = 10_000        # buckets kept; beyond that, full (idle) ones are forgotten first


class TooMany(Exception):
    """429: the client has spent its budget; retry_after is in whole seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"too many expensive requests (searches, deep pages): retry in {retry_after} s, "
                         f"or page with `after` instead of `offset`")
        self.retry_after = retry_after


class RateLimiter:
    """`per_minute` requests a minute per client, in bursts of at most `per_minute`."""

    def __init__(self, per_minute: int, clock=time.monotonic):
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0           # tokens a second
        self.clock = clock
        self.buckets: dict[str, tuple[float, float]] = {}      # client -> (tokens, at)
        self.lock = threading.Lock()

    def take(self, client: str) -> None:
        """Spend one request of `client`'s budget, or raise TooMany."""
        if self.capacity <= 0:
            return
        with self.lock:
            now = self.clock()
            tokens, at = self.buckets.get(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - at) * self.rate)
            if tokens < 1.0:
                self.buckets[client] = (tokens, now)
                raise TooMany(max(1, int((1.0 - tokens) / self.rate + 0.999)))
            if client not in self.buckets and len(self.buckets) >= MAX_CLIENTS:
                self._forget(now)
            self.buckets[client] = (tokens - 1.0, now)

    def blocked(self, client: str) -> int | None:
        """Whole seconds until `client` has one request again when its budget is spent, else None
        (nothing is spent: the auth middleware asks before it checks credentials, and spends one
        with take() only when they fail)."""
        if self.capacity <= 0:
            return None
        with self.lock:
            now = self.clock()
            tokens, at = self.buckets.get(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - at) * self.rate)
        return None if tokens >= 1.0 else max(1, int((1.0 - tokens) / self.rate + 0.999))

    def _forget(self, now: float) -> None:
        """Drop the buckets that have refilled (they hold nothing), else the oldest half."""
        full = [c for c, (tokens, at) in self.buckets.items() if tokens + (now - at) * self.rate >= self.capacity]
        for client in full or sorted(self.buckets, key=lambda c: self.buckets[c][1])[:MAX_CLIENTS // 2]:
            del self.buckets[client]
