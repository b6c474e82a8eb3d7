"""The web's ASGI middleware: micro-caching of GET responses and the security headers."""

import time

STALE_SECONDS = 30.0            # a cached response is served this much longer while one request renders it again


class ResponseCache:
    """Reuse a successful GET response for a few seconds (nginx's "micro-caching").

    A status page is read by many people at once and its figures move by the minute: with
    100,000 URLs, twenty people (or one wall display per team) asking for page 1 in the same
    second cost one rendering, not twenty. Concurrent misses for one key wait for the first
    (single flight); once an entry expires, one request renders it again while the others are
    served the old one (at most STALE_SECONDS older). It sits inside the auth middleware: only
    admitted requests reach it.
    """

    def __init__(self, app, ttl: float, max_entries: int = 256):
        self.app, self.ttl, self.max_entries = app, ttl, max_entries
        self.entries: dict = {}            # key -> (expires, start message, body)
        self.pending: dict = {}            # key -> asyncio.Future of the first request's response

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "GET" or self.ttl <= 0:
            return await self.app(scope, receive, send)
        import asyncio
        key = scope["path"] + "?" + scope.get("query_string", b"").decode("latin-1")
        now = time.monotonic()
        hit = self.entries.get(key)
        if hit is not None and hit[0] <= now and not (key in self.pending and hit[0] + STALE_SECONDS > now):
            hit = None          # expired, and nobody is refreshing it (or it is too old): render it
        if hit is None and key in self.pending:
            hit = await asyncio.shield(self.pending[key])
        if hit is not None:     # fresh, or stale for a moment while another request refreshes it
            await send(dict(hit[1]))          # a copy: outer middleware add headers to the message
            await send({"type": "http.response.body", "body": hit[2]})
            return
        future = asyncio.get_running_loop().create_future()
        self.pending[key] = future
        captured = {"start": None, "body": [], "complete": False}

        async def capture(message):
            if message["type"] == "http.response.start":
                captured["start"] = dict(message, headers=list(message.get("headers", [])))
            elif message["type"] == "http.response.body":
                captured["body"].append(message.get("body", b""))
                captured["complete"] = not message.get("more_body", False)
            await send(message)
        entry = None
        try:
            await self.app(scope, receive, capture)
            start = captured["start"]
            if start is not None and start["status"] == 200 and captured["complete"]:
                entry = (time.monotonic() + self.ttl, start, b"".join(captured["body"]))
                if len(self.entries) >= self.max_entries:
                    self.entries = {k: v for k, v in self.entries.items() if v[0] > time.monotonic()}
                    if len(self.entries) >= self.max_entries:
                        self.entries.pop(next(iter(self.entries)))
                self.entries[key] = entry
        finally:
            self.pending.pop(key, None)
            future.set_result(entry)


class SecurityHeaders:
    """CSP (nothing external; the one inline script by hash; framing per web.frame_ancestors)."""

    def __init__(self, app, frame_ancestors: str, script_hash: str):
        self.app = app
        csp = (f"default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
               f"script-src 'sha256-{script_hash}'; base-uri 'none'; form-action 'self'; "
               f"frame-ancestors {frame_ancestors}")
        self.headers = [(b"content-security-policy", csp.encode()), (b"x-content-type-options", b"nosniff"),
                        (b"referrer-policy", b"same-origin")]
        if frame_ancestors.strip() == "'none'":
            self.headers.append((b"x-frame-options", b"DENY"))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + self.headers
            await send(message)
        await self.app(scope, receive, with_headers)
